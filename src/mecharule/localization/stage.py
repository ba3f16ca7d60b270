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
from mecharule.config import LocalizeConfig
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.values import ValueTable
from mecharule.io.journal import Journal
from mecharule.io.rundir import atomic_path, read_json, read_parquet, write_json
from mecharule.localization.oracle import EngineOracle, EngineWork, ProblemSlices, build_problem
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
from mecharule.tasks.base import Task, stop_strings_of

Tick = Callable[[int, int], None]


@dataclass
class LocalizationSetup:
    """Everything a search (or brute force) over the run's problems needs."""

    specs: list[ProblemSpec]
    problems: dict[str, ProblemSlices]
    search_problems: list[SearchProblem]
    oracle: EngineOracle
    tables: Mapping[SiteKey, ValueTable]
    disjuncts: list[dict[str, Any]]
    all_units: list[Site]  # every unit of the searched kind in the model (validation's population)

    def population(self, problem: SearchProblem) -> list[Site]:
        """Every unit of the layers a problem's candidates come from."""
        layers = {u.layer for u in problem.candidates}
        return [u for u in self.all_units if u.layer in layers]


def search_config(cfg: LocalizeConfig, seed: int) -> SearchConfig:
    return SearchConfig(
        predicate=cfg.predicate,
        tau=cfg.tau,
        alpha_slice=cfg.alpha_slice,
        sign_split_first=cfg.sign_split_first,
        order_by_score=cfg.order_by_score,
        contrast_margin=cfg.contrast_margin,
        group_across_layers=cfg.group_across_layers,
        budget=cfg.budget,
        seed=seed,
        prune_on=cfg.prune_on,
        audit=cfg.audit,
        expand_dense=cfg.expand_dense,
    )


def value_tables(
    handle: ModelHandle,
    behaviour: pd.DataFrame,
    kind: UnitKind,
    cfg: LocalizeConfig,
    seed: int,
    run_dir: Path | None = None,
) -> Mapping[SiteKey, ValueTable]:
    """The reference value tables, stored once per run when ``run_dir`` is given (reference_cache)."""
    return reference_cache.value_tables(run_dir, handle, behaviour, kind, cfg.ablation, cfg.n_reference, seed)


def every_unit(handle: ModelHandle, kind: UnitKind) -> list[Site]:
    width = handle.arch.width(kind)
    return [Site(layer, kind, i) for layer in range(handle.arch.n_layers) for i in range(width)]


def candidate_units(
    run_dir: Path, rule_id: str, handle: ModelHandle, kind: UnitKind, top_m: int | str, method: str
) -> tuple[list[Site], dict[Site, float] | None]:
    """Attribution-ranked top-M candidates if ``attribute`` ran, else every unit of the kind (no scores)."""
    path = run_dir / "attribution" / f"rule_{rule_id}.safetensors"
    if not path.exists():
        return every_unit(handle, kind), None
    from safetensors.torch import load_file

    from mecharule.attribution import select_candidates

    scores = load_file(str(path))[method]  # [n_layers, width]
    units = sorted(select_candidates(scores, kind, top_m))
    return units, {u: float(scores[u.layer, u.index]) for u in units}


def prepare(
    handle: ModelHandle,
    task: Task,
    run_dir: Path,
    cfg: LocalizeConfig,
    *,
    kind: UnitKind,
    top_m: int | str,
    method: str,
    max_rules: int,
    min_coverage: float,
    seed: int,
) -> LocalizationSetup:
    behaviour = read_parquet(run_dir / "behaviour.parquet")
    features = read_parquet(run_dir / "features.parquet")
    disjuncts = behaviour_rules(read_json(run_dir / "rules.json"), max_rules, min_coverage)
    pool, clustering = None, None
    if cfg.sampling == "spectral":
        pool, clustering = reference_cache.spectral_pool(
            run_dir, handle, behaviour, cfg.sampling_pool, cfg.n_clusters, seed
        )
    specs = problem_specs(
        disjuncts, behaviour, features, cfg.regimes, cfg.n_covered, cfg.n_unrelated, seed, pool, clustering
    )
    tables = value_tables(handle, behaviour, kind, cfg, seed, run_dir)
    problems: dict[str, ProblemSlices] = {}
    search_problems = []
    for spec in specs:
        if spec.skipped:
            continue
        problems[spec.key] = build_problem(
            spec.key,
            handle,
            behaviour,
            spec.covered_rows,
            spec.unrelated_rows,
            task.score,
            tables,
            task.max_new_tokens,
            cfg.positions,
            cfg.memory_budget_mb,
            stop_strings_of(task),
        )
        units, scores = candidate_units(run_dir, spec.rule_id, handle, kind, top_m, method)
        search_problems.append(SearchProblem(spec.key, units, scores))  # type: ignore[arg-type]
    oracle = EngineOracle(problems)  # type: ignore[arg-type]
    return LocalizationSetup(
        specs, problems, search_problems, oracle, tables, list(disjuncts), every_unit(handle, kind)
    )


def run_search(
    setup: LocalizationSetup,
    cfg: LocalizeConfig,
    seed: int,
    tick: Tick | None,
    oracle: EngineOracle | None = None,
) -> tuple[SearchResult, float]:
    """CHA over the setup's problems with ``oracle`` (default: the setup's, unjournaled)."""
    started = time.perf_counter()
    oracle = setup.oracle if oracle is None else oracle
    result = search(setup.search_problems, oracle, search_config(cfg, seed), progress=tick)
    return result, time.perf_counter() - started


def write_localization(
    run_dir: Path,
    setup: LocalizationSetup,
    result: SearchResult,
    wall: float,
    suppression: Mapping[str, dict[str, Any]],
    replayed: EngineWork | None = None,
) -> dict[str, Any]:
    """``replayed``: engine work of answers taken from a journal, counted as if done here."""
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
    handle: ModelHandle,
    task: Task,
    run_dir: Path,
    setup: LocalizationSetup,
    result: SearchResult,
    cfg: LocalizeConfig,
    seed: int,
    n_eval: int = 512,
    journal: Journal | None = None,
) -> tuple[dict[str, dict[str, Any]], EngineWork]:
    """All agonists of a problem ablated together: positive rate before/after on covered and unrelated
    prompts (both labels, all rows), plus the reference's union flip coverage on the problem's slices.

    Also returns the work on the setup's engines that journaled entries saved (see :func:`localize`).
    """
    behaviour = read_parquet(run_dir / "behaviour.parquet")
    features = read_parquet(run_dir / "features.parquet")
    by_id = {d["id"]: d for d in setup.disjuncts}
    effects: dict[str, dict[str, Any]] = {}
    replayed = EngineWork()
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
        mask = rule_mask(by_id[spec.rule_id], features)
        entry = _suppression(handle, task, behaviour, mask, setup, spec.key, agonists, cfg, seed, n_eval)
        effects[spec.key] = entry
        if journal is not None:
            work = EngineWork.of(setup.problems.values()) - before
            journal.put(key, {"entry": entry, "work": [work.forwards, work.generated_rows]})
    return effects, replayed


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
    handle: ModelHandle,
    task: Task,
    behaviour: pd.DataFrame,
    mask: np.ndarray,
    setup: LocalizationSetup,
    key: str,
    agonists: list[Site],
    cfg: LocalizeConfig,
    seed: int,
    n_eval: int,
) -> dict[str, Any]:
    """One problem's joint-suppression entry (see :func:`suppression_effects`)."""
    from mecharule.interventions.engine import AblationEngine

    rng = np.random.default_rng([seed, 11])
    entry: dict[str, Any] = {"agonists": [str(u) for u in agonists]}
    for side, rows in (("covered", np.flatnonzero(mask)), ("unrelated", np.flatnonzero(~mask))):
        pick = np.sort(rng.choice(rows, size=min(n_eval, len(rows)), replace=False))
        engine = AblationEngine(
            handle,
            behaviour.iloc[pick],
            task.score,
            setup.tables,
            task.max_new_tokens,
            positions=cfg.positions,
            memory_budget_mb=cfg.memory_budget_mb,
            stop_strings=stop_strings_of(task),
        )
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


def localize(
    handle: ModelHandle,
    task: Task,
    run_dir: Path,
    cfg: LocalizeConfig,
    setup: LocalizationSetup,
    *,
    seed: int,
    tick: Tick | None = None,
    journal: Journal | None = None,
) -> dict[str, Any]:
    """CHA over the prepared problems, joint suppression, and the ``localization/`` files.

    ``journal``: keep finished oracle answers and suppression entries there, and take those an
    earlier (killed) run of this stage kept (see the module docstring). The caller discards it.
    """
    oracle = setup.oracle.journaled(journal, "cha")
    result, wall = run_search(setup, cfg, seed, tick, oracle)
    suppression, saved = suppression_effects(
        handle, task, run_dir, setup, result, cfg, seed, cfg.n_suppression, journal
    )
    return write_localization(run_dir, setup, result, wall, suppression, oracle.replayed_work + saved)


__all__ = ["LocalizationSetup", "localize", "prepare", "run_search"]
