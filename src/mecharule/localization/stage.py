"""The localization stage: CHA over every (behaviour rule, regime), plus joint suppression.

Writes ``localization/<rule>_<regime>/{trace.jsonl,agonists.csv}`` and ``localization/summary.json``.

Checkpoints: with a :class:`~mecharule.io.journal.Journal`, every oracle answer (namespace ``cha``)
and every problem's joint-suppression entry is journaled as it is computed; the search is
deterministic given the seed, so a resumed run re-issues the same queries and the journal answers
the ones a killed run finished, without engine work. :func:`prepare` (baselines, reference tables,
spectral sampling) is not journaled: a resumed run recomputes it. Reported costs
(``group_evaluations``, ``forwards``, ``generated_rows``) are those of one uninterrupted run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mecharule import reference_cache
from mecharule.config import RunConfig
from mecharule.context import StageContext
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.values import ValueTable
from mecharule.io.rundir import atomic_path, read_json, read_parquet, write_json
from mecharule.localization.oracle import (
    EngineInputs,
    EngineOracle,
    EngineWork,
    ProblemSlices,
    build_problem,
)
from mecharule.localization.problems import (
    ProblemSpec,
    behaviour_rules,
    problem_specs,
    rule_mask,
)
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import Site, UnitKind
from mecharule.search.cha import search
from mecharule.search.population import NO_SAVING
from mecharule.search.results import AGONIST_COLUMNS, SearchResult
from mecharule.search.types import SearchConfig, SearchProblem

Tick = Callable[[int, int], None]


@dataclass
class LocalizationSetup:
    """Everything a search (or brute force) over the run's problems needs."""

    specs: list[ProblemSpec]
    problems: dict[str, ProblemSlices]
    search_problems: list[SearchProblem]
    oracle: EngineOracle
    inputs: EngineInputs  # what every engine of the stage shares (model, task, ablation values)
    disjuncts: list[dict[str, Any]]
    all_units: list[Site]  # every unit of the searched kind in the model (validation's population)

    def population(self, problem: SearchProblem) -> list[Site]:
        """Every unit of the layers a problem's candidates come from."""
        layers = {u.layer for u in problem.candidates}
        return [u for u in self.all_units if u.layer in layers]


def search_config(config: RunConfig) -> SearchConfig:
    """The search's settings: ``config.search`` and the run's seed."""
    cfg = config.search
    return SearchConfig(
        predicate=cfg.predicate,
        tau=cfg.tau,
        alpha_slice=cfg.alpha_slice,
        sign_split_first=cfg.sign_split_first,
        order_by_score=cfg.order_by_score,
        contrast_margin=cfg.contrast_margin,
        group_across_layers=cfg.group_across_layers,
        budget=cfg.budget,
        seed=config.seed,
        prune_on=cfg.prune_on,
        audit=cfg.audit,
        expand_dense=cfg.expand_dense,
    )


def value_tables(ctx: StageContext, behaviour: pd.DataFrame) -> Mapping[SiteKey, ValueTable]:
    """The configured ablation's reference value tables, stored once per run (reference_cache)."""
    ablation = ctx.config.ablation
    return reference_cache.value_tables(
        ctx.path, ctx.handle, behaviour, ctx.config.units.kind, ablation.value, ablation.n_reference, ctx.seed
    )


def every_unit(handle: ModelHandle, kind: UnitKind) -> list[Site]:
    width = handle.arch.width(kind)
    return [Site(layer, kind, i) for layer in range(handle.arch.n_layers) for i in range(width)]


def candidate_units(ctx: StageContext, rule_id: str) -> tuple[list[Site], dict[Site, float] | None]:
    """Attribution-ranked top-M candidates (by the first method) if ``attribute`` ran, else every unit
    of the kind (no scores)."""
    kind = ctx.config.units.kind
    path = ctx.path / "attribution" / f"rule_{rule_id}.safetensors"
    if not path.exists():
        return every_unit(ctx.handle, kind), None
    from safetensors.torch import load_file

    from mecharule.attribution import select_candidates

    att = ctx.config.attribution
    scores = load_file(str(path))[att.methods[0]]  # [n_layers, width]
    units = sorted(select_candidates(scores, kind, att.top_m))
    return units, {u: float(scores[u.layer, u.index]) for u in units}


def prepare(ctx: StageContext) -> LocalizationSetup:
    """The run's problems (rule x regime), their prompt slices and engines, candidates and oracle."""
    cfg, handle = ctx.config, ctx.handle
    behaviour = read_parquet(ctx.path / "behaviour.parquet")
    features = read_parquet(ctx.path / "features.parquet")
    disjuncts = behaviour_rules(
        read_json(ctx.path / "rules.json"), cfg.rules.max_rules, cfg.rules.min_coverage
    )
    specs = problem_specs(
        disjuncts, behaviour, features, cfg.search, ctx.seed, _spectral_pool(ctx, behaviour)
    )
    tables = value_tables(ctx, behaviour)
    inputs = EngineInputs(handle, ctx.task, tables, cfg.ablation.positions, ctx.memory_budget_mb)
    problems: dict[str, ProblemSlices] = {}
    search_problems = []
    for spec in specs:
        if spec.skipped:
            continue
        problems[spec.key] = build_problem(
            spec.key, behaviour, (spec.covered_rows, spec.unrelated_rows), inputs
        )
        units, scores = candidate_units(ctx, spec.rule_id)
        search_problems.append(SearchProblem(spec.key, units, scores))  # type: ignore[arg-type]
    oracle = EngineOracle(problems)  # type: ignore[arg-type]
    units = every_unit(handle, cfg.units.kind)
    return LocalizationSetup(specs, problems, search_problems, oracle, inputs, list(disjuncts), units)


def _spectral_pool(ctx: StageContext, behaviour: pd.DataFrame) -> tuple[Any, Any] | None:
    """The shared spectral pool (rows, clustering) when slices are sampled spectrally."""
    cfg = ctx.config.search
    if cfg.sampling != "spectral":
        return None
    return reference_cache.spectral_pool(
        ctx.path, ctx.handle, behaviour, cfg.sampling_pool, cfg.n_clusters, ctx.seed
    )


def run_search(
    setup: LocalizationSetup, config: SearchConfig, tick: Tick | None, oracle: EngineOracle | None = None
) -> tuple[SearchResult, float]:
    """CHA over the setup's problems with ``oracle`` (default: the setup's, unjournaled)."""
    started = time.perf_counter()
    oracle = setup.oracle if oracle is None else oracle
    result = search(setup.search_problems, oracle, config, progress=tick)
    return result, time.perf_counter() - started


def write_localization(
    run_dir: Path,
    setup: LocalizationSetup,
    result: SearchResult,
    wall: float,
    suppression: Mapping[str, dict[str, Any]],
    replayed: EngineWork | None = None,
) -> dict[str, Any]:
    """``replayed``: engine work not on the setup's engines (answers taken from a journal, batches
    run by another executor's replicas), counted as if done here."""
    out = run_dir / "localization"
    work = EngineWork.of(setup.problems.values()) + (replayed or EngineWork())
    stats = {p.problem: p for p in result.problems}
    readable = {d["id"]: d.get("readable", d.get("text", "")) for d in setup.disjuncts}
    entries = []
    for spec in setup.specs:
        entry: dict[str, Any] = {
            "key": spec.key,
            "rule_id": spec.rule_id,
            "regime": spec.regime,
            "rule": readable.get(spec.rule_id, ""),
            "skipped": spec.skipped,
        }
        if not spec.skipped:
            entry.update(_problem_entry(out, spec, setup.problems[spec.key], result, stats[spec.key]))
            entry["suppression"] = suppression.get(spec.key, {})
        entries.append(entry)
    summary = {
        "problems": entries,
        "group_evaluations": result.group_evaluations,
        "oracle_calls": result.oracle_calls,
        "truncated": result.truncated,
        "n_agonists": len({str(a.unit) for a in result.agonists}),
        "wall_seconds": round(wall, 3),
        "forwards": work.forwards,
        "generated_rows": work.generated_rows,
    }
    write_json(out / "summary.json", summary)
    return summary


def _problem_entry(
    out: Path, spec: ProblemSpec, problem: ProblemSlices, result: SearchResult, stats: Any
) -> dict[str, Any]:
    folder = out / spec.key.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "trace.jsonl") as tmp:
        lines = [json.dumps(r.to_dict(), default=str) for r in result.trace if r.problem == spec.key]
        tmp.write_text("\n".join(lines) + ("\n" if lines else ""))
    agonists = [a.to_dict() for a in result.agonists_for(spec.key)]
    with atomic_path(folder / "agonists.csv") as tmp:
        rows = [_flat_agonist(a) for a in agonists]
        pd.DataFrame(rows, columns=list(rows[0]) if rows else list(AGONIST_COLUMNS)).to_csv(tmp, index=False)
    return {
        "n_covered": problem.n_covered,
        "n_unrelated": problem.n_unrelated,
        "dropped_unreproduced": len(problem.dropped_rows),
        "n_candidates": stats.n_candidates,
        "group_evaluations": stats.group_evaluations,
        "levels": stats.levels,
        "density": None if stats.density is None else round(stats.density, 4),
        "audit_evaluations": stats.audit_evaluations,
        "expanded_groups": stats.expanded_groups,
        "nonmonotone_splits": stats.nonmonotone_splits,
        "cha_cannot_save": bool(stats.n_candidates)
        and stats.group_evaluations >= NO_SAVING * stats.n_candidates,
        "agonists": agonists,
        "catastrophic": [str(c.unit) for c in result.catastrophic if c.problem == spec.key],
    }


def _flat_agonist(a: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in a.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}_{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def suppression_effects(
    ctx: StageContext, setup: LocalizationSetup, result: SearchResult
) -> tuple[dict[str, dict[str, Any]], EngineWork]:
    """All agonists of a problem ablated together: positive rate before/after on covered and unrelated
    prompts (both labels, all rows; ``search.n_suppression`` of each), plus the reference's union
    flip coverage on the problem's slices.

    Also returns the work on the setup's engines that journaled entries saved (see :func:`localize`).
    """
    behaviour = read_parquet(ctx.path / "behaviour.parquet")
    features = read_parquet(ctx.path / "features.parquet")
    by_id = {d["id"]: d for d in setup.disjuncts}
    effects: dict[str, dict[str, Any]] = {}
    replayed = EngineWork()
    journal = ctx.journal
    for spec in setup.specs:
        agonists: list[Site] = [a.unit for a in result.agonists_for(spec.key)]  # type: ignore[misc]
        if spec.skipped or not agonists:
            continue
        key = f"suppression|{spec.key}"
        done: Any = journal.get(key) if journal is not None else None
        if _matches(done, agonists):
            effects[spec.key] = done["entry"]
            replayed = replayed + EngineWork(*done["work"])
            continue
        before = EngineWork.of(setup.problems.values())
        slices = _suppression_slices(ctx, rule_mask(by_id[spec.rule_id], features))
        entry = _suppression(setup, behaviour, slices, spec.key, agonists)
        effects[spec.key] = entry
        if journal is not None:
            work = EngineWork.of(setup.problems.values()) - before
            journal.put(key, {"entry": entry, "work": [work.forwards, work.generated_rows]})
    return effects, replayed


def _suppression_slices(ctx: StageContext, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Up to ``n_suppression`` covered and unrelated rows (all labels), seeded."""
    n_eval = ctx.config.search.n_suppression
    rng = ctx.rng("search.suppression")
    slices = {}
    for side, rows in (("covered", np.flatnonzero(mask)), ("unrelated", np.flatnonzero(~mask))):
        slices[side] = np.sort(rng.choice(rows, size=min(n_eval, len(rows)), replace=False))
    return slices


def _matches(done: Any, agonists: list[Site]) -> bool:
    """A journaled suppression entry for these agonists, with the engine work it cost."""
    return (
        isinstance(done, dict)
        and isinstance(done.get("entry"), dict)
        and done["entry"].get("agonists") == [str(u) for u in agonists]
        and isinstance(done.get("work"), list)
        and len(done["work"]) == 2
    )


def _suppression(
    setup: LocalizationSetup,
    behaviour: pd.DataFrame,
    slices: Mapping[str, np.ndarray],
    key: str,
    agonists: list[Site],
) -> dict[str, Any]:
    """One problem's joint-suppression entry (see :func:`suppression_effects`)."""
    entry: dict[str, Any] = {"agonists": [str(u) for u in agonists]}
    for side, pick in slices.items():
        engine = setup.inputs.engine(behaviour.iloc[pick])
        after = engine.run([agonists]).labels[0]
        entry[side] = {
            "n": len(pick),
            "positive_rate_before": round(float(engine.baseline_labels.mean()), 4),
            "positive_rate_after": round(float(after.mean()), 4),
        }
    singles = setup.oracle.flips(key, [[u] for u in agonists])
    flipped_any = np.asarray(singles.any(axis=0), dtype=bool)
    cov = setup.problems[key].is_covered
    entry["union_flip_coverage"] = {
        "note": "share of the problem's eligible prompts flipped by at least one agonist ablated ALONE "
        "(the paper's union metric; not a joint ablation)",
        "covered": round(float(flipped_any[cov].mean()), 4),
        "unrelated": round(float(flipped_any[~cov].mean()), 4),
    }
    return entry


def localize(ctx: StageContext, setup: LocalizationSetup, tick: Tick | None = None) -> dict[str, Any]:
    """CHA over the prepared problems, joint suppression, and the ``localization/`` files.

    With ``ctx.journal``, keep finished oracle answers and suppression entries there, and take those
    an earlier (killed) run of this stage kept (see the module docstring). The caller discards it.
    """
    oracle = setup.oracle.journaled(ctx.journal, "cha")
    result, wall = run_search(setup, search_config(ctx.config), tick, oracle)
    suppression, saved = suppression_effects(ctx, setup, result)
    work = oracle.replayed_work + oracle.remote_work + saved  # work not on the setup's engines
    return write_localization(ctx.path, setup, result, wall, suppression, work)


__all__ = ["LocalizationSetup", "localize", "prepare", "run_search"]
