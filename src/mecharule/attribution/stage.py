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

import dataclasses
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

from mecharule.attribution import ATTRIBUTORS, AttributionMethod, AttributionRequest, select_candidates
from mecharule.context import StageContext
from mecharule.errors import ConfigError, DataError
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.values import AblationKind, PositionMode, ValueTable
from mecharule.io.journal import Journal
from mecharule.io.rundir import SCHEMA_VERSION, atomic_path, read_json, read_parquet, write_json
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


@dataclass(frozen=True)
class _Settings:
    """The attribution settings of a run, and what every rule is attributed with."""

    handle: ModelHandle
    task: str
    methods: tuple[str, ...]
    kind: UnitKind
    n_pairs: int
    ig_steps: int
    seed: int
    positions: PositionMode
    batch_size: int
    tables: Mapping[SiteKey, ValueTable] | None = None


def attribute_rules(
    ctx: StageContext,
    rules: Sequence[Mapping[str, Any]],
    *,
    regime: str = "positive",
    behaviour: pd.DataFrame | None = None,
    batch_size: int = 64,
    tick: Callable[[int], None] | None = None,
) -> list[RuleAttribution]:
    """Attribute every rule (``{"id": str, "mask": bool array over behaviour rows | callable(frame)}``,
    optional ``"text"``) with ``ctx.config.attribution``'s methods on ``ctx.config.units.kind``; see the
    module docstring. ``behaviour`` defaults to the run's table. With ``ctx.journal``, record each
    finished rule there, and skip the rules an earlier (killed) run finished. ``tick(1)`` after the
    eligible pool and tables are ready and after each rule (``len(rules) + 1`` in all)."""
    cfg = ctx.config
    methods, n_pairs = tuple(cfg.attribution.methods), cfg.attribution.n_pairs
    _check_options(methods, regime, n_pairs, rules)
    kind = check_unit_kind(cfg.units.kind)
    out_dir = ctx.path / "attribution"
    if behaviour is None:
        behaviour = read_parquet(ctx.path / "behaviour.parquet")
    behaviour = behaviour.reset_index(drop=True)
    masks = [_rule_mask(rule, behaviour) for rule in rules]
    keys = [f"rule|{rule['id']}|{_digest(mask.tobytes())}" for rule, mask in zip(rules, masks, strict=True)]
    finished = [
        _journaled(out_dir, str(r["id"]), key, ctx.journal) for r, key in zip(rules, keys, strict=True)
    ]
    step = tick or (lambda n: None)
    if all(done is not None for done in finished):
        step(len(rules) + 1)
        return [done for done in finished if done is not None]
    settings = _Settings(
        ctx.handle,
        ctx.task.name,
        methods,
        kind,
        n_pairs,
        cfg.attribution.ig_steps,
        ctx.seed,
        cfg.ablation.positions,
        batch_size,
    )
    pools: dict[str, _Pool | None] = {regime: _eligible_pool(settings, behaviour, regime)}
    if any(ATTRIBUTORS.get(m).inputs == "tables" for m in methods):
        tables = _reference_tables(ctx, behaviour, kind)
        settings = dataclasses.replace(settings, tables=tables)
    step(1)
    results = []
    for rule, mask, key, done in zip(rules, masks, keys, finished, strict=True):
        if done is None:
            done = _attribute_rule(settings, pools, (rule, mask, regime), behaviour)
            files = _save(out_dir, done.rule_id, done.scores, done.record)
            if ctx.journal is not None:
                ctx.journal.put(key, {name: _digest(path.read_bytes()) for name, path in files.items()})
        results.append(done)
        step(1)
    return results


def run_attribute(ctx: StageContext) -> list[str]:
    """The attribute stage: the run's behaviour rules (those localization will search) attributed;
    returns the files written."""
    from mecharule.localization.problems import behaviour_rules, rule_mask

    cfg = ctx.config.rules
    features = read_parquet(ctx.path / "features.parquet")
    disjuncts = behaviour_rules(read_json(ctx.path / "rules.json"), cfg.max_rules, cfg.min_coverage)
    rules = [
        {"id": d["id"], "mask": rule_mask(d, features), "text": d.get("readable", "")} for d in disjuncts
    ]
    with ctx.progress(f"attribute ({len(rules)} rules)", len(rules) + 1) as tick:
        attribute_rules(ctx, rules, tick=tick)
    return [f"attribution/rule_{r['id']}.{ext}" for r in rules for ext in ("safetensors", "json")]


def _attribute_rule(
    settings: _Settings,
    pools: dict[str, _Pool | None],
    rule_mask_regime: tuple[Mapping[str, Any], np.ndarray, str],
    behaviour: pd.DataFrame,
) -> RuleAttribution:
    """One rule on its regime's pool, or, when it covers no row of that regime (a real model can
    fail a whole slice, such as every negative result), on the other regime's covered rows, rather
    than leave the rule unranked (every unit searched)."""
    rule, mask, regime = rule_mask_regime
    pool = pools[regime]
    assert pool is not None
    used = regime
    result = _attribute_one(settings, pool, str(rule["id"]), mask)
    if result.skipped and not mask[pool.rows].any():
        other = next(r for r in REGIME_LABEL if r != regime)
        if other not in pools:
            pools[other] = _optional_pool(settings, behaviour, other)
        other_pool = pools[other]
        if other_pool is not None and mask[other_pool.rows].any():
            used = other
            result = _attribute_one(settings, other_pool, str(rule["id"]), mask)
            result.record["regime_fallback"] = (
                f"the rule covers no eligible {regime} TRAIN row; attributed on {other} rows"
            )
    record = {
        "rule_id": result.rule_id,
        "rule": rule.get("text", ""),
        "regime": used,
        "kind": settings.kind,
        "positions": settings.positions,
        "model": settings.handle.name,
        "task": settings.task,
        "seed": settings.seed,
        **result.record,
    }
    return RuleAttribution(result.rule_id, result.scores, record)


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


def _attribute_one(settings: _Settings, pool: _Pool, rule_id: str, mask: np.ndarray) -> RuleAttribution:
    fires = mask[pool.rows]
    covered_pool, uncovered_pool = np.flatnonzero(fires), np.flatnonzero(~fires)
    base = {"n_covered_available": len(covered_pool), "n_uncovered_available": len(uncovered_pool)}
    if len(covered_pool) == 0 or len(uncovered_pool) == 0:
        reason = f"{len(covered_pool)} covered and {len(uncovered_pool)} uncovered eligible rows"
        return RuleAttribution(rule_id, {}, {**base, "status": "skipped", "reason": reason})
    c = pool.clustering
    covered = stratified_sample(c.Z, c.centers, c.assignment, covered_pool, settings.n_pairs, settings.seed)
    pairing = length_matched_pairs(covered, uncovered_pool, pool.lengths, pool.states)
    matched = pairing.matched_pairs()
    scores: dict[str, torch.Tensor] = {}
    per_method: dict[str, Any] = {}
    for name in settings.methods:
        method = ATTRIBUTORS.get(name)
        if method.inputs == "pairs" and not matched:
            per_method[name] = {"status": "skipped", "reason": "no length-matched pair"}
            continue
        started = time.perf_counter()
        request = _request(settings, pool, method, covered, matched)
        scores[name] = method(settings.handle, request)
        per_method[name] = {
            "status": "ok",
            "n_prompts": len(request.prompts),
            "seconds": round(time.perf_counter() - started, 3),
            "top_units": _top_units(scores[name], settings.kind),
        }
    record = {
        **base,
        "status": "ok" if scores else "skipped",
        "n_pairs": len(matched),
        "ig_steps": settings.ig_steps,
        "pairing": pairing.stats(),
        "covered_rows": pool.rows[covered].tolist(),
        "corrupted_rows": [int(pool.rows[r]) for _, r in matched],
        "clean_rows_of_pairs": [int(pool.rows[c_]) for c_, _ in matched],
        "methods": per_method,
    }
    return RuleAttribution(rule_id, scores, record)


def _request(
    settings: _Settings,
    pool: _Pool,
    method: AttributionMethod,
    covered: np.ndarray,
    matched: list[tuple[int, int]],
) -> AttributionRequest:
    pairs = method.inputs == "pairs"
    clean = [c for c, _ in matched] if pairs else list(covered)
    return AttributionRequest(
        prompts=[pool.prompts[i] for i in clean],
        answers=[pool.answers[i] for i in clean],
        kind=settings.kind,
        positions=settings.positions,
        tables=None if pairs else settings.tables,
        corrupted_prompts=[pool.prompts[r] for _, r in matched] if pairs else None,
        ig_steps=settings.ig_steps,
        batch_size=settings.batch_size,
    )


def _eligible_pool(settings: _Settings, behaviour: pd.DataFrame, regime: str) -> _Pool:
    handle, n_pairs, seed = settings.handle, settings.n_pairs, settings.seed
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


def _optional_pool(settings: _Settings, behaviour: pd.DataFrame, regime: str) -> _Pool | None:
    try:
        return _eligible_pool(settings, behaviour, regime)
    except DataError:
        return None


def _reference_tables(
    ctx: StageContext, behaviour: pd.DataFrame, kind: UnitKind
) -> dict[SiteKey, ValueTable]:
    """The values AtP patches towards: those localization ablates to (the shared reference draw).
    Zero ablation patches to zero; a resample ablation, whose value differs per prompt, is taken at
    its expectation over the reference draw, the mean."""
    from mecharule import reference_cache

    ablation = ctx.config.ablation
    target: AblationKind = "zero" if ablation.value == "zero" else "mean"
    return reference_cache.value_tables(
        ctx.path, ctx.handle, behaviour, kind, target, ablation.n_reference, ctx.seed
    )


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


__all__ = ["RuleAttribution", "attribute_rules", "run_attribute"]
