"""Localization, measured against brute force over EVERY unit: shortlist recall per attribution method
and size, CHA's recall over all units per regime and predicate, its cost and wall-time ratios.

Per model (default: the bundled ``zoo:arithmetic`` (Qwen2, 256 units), ``zoo:arithmetic_gpt2``
(GPT-2, seed 7, 128 units) and ``zoo:arithmetic_wide`` (Llama, 4 x 512 = 2,048 units)):

1. a run directory with behaviour, rules and attribution by AtP, AtP+GradDrop and EAP-IG (made once,
   reused);
2. every unit of the model ablated alone on every problem (brute force over the population): the
   reference. Its counts do not depend on the predicate, so each predicate's reference agonists come
   from the same sweep;
3. shortlist recall: for each attribution method and top-M, the share of the reference agonists with
   observed effect >= 0.5 and >= 0.3 that the top-M holds;
4. for each predicate (ucb, contrastive, observed) and shortlist size: CHA over the candidates,
   then brute force over the same candidates, timed side by side: recall over ALL units by
   observed-effect bin and regime, cost ratio (CHA evaluations / candidates, max over problems),
   wall-time ratio, density k/N, and the predicate's precision (share of its agonists whose observed
   effect reaches tau) and recall of the units whose observed effect reaches tau.

    python benchmarks/localize.py [--models zoo:arithmetic ...] [--out /root/bench-localize] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from mecharule.attribution import select_candidates
from mecharule.config import RunConfig, load_config
from mecharule.localization.stage import LocalizationSetup, prepare, search_config
from mecharule.pipeline import Pipeline
from mecharule.search import (
    SearchConfig,
    SearchProblem,
    TraceRecord,
    evaluate_counts,
    search,
)
from mecharule.search.brute_force import BruteForceResult, brute_force
from mecharule.search.population import PopulationProblem, by_regime, effect

MODELS = ("zoo:arithmetic", "zoo:arithmetic_gpt2", "zoo:arithmetic_wide")
METHODS = ("atp", "atp_gd", "eap_ig")
SHORTLISTS = ("10%", "25%", "50%", "75%", "100%")
PREDICATES = ("ucb", "contrastive", "observed")


def run_dir_for(model: str, out: Path) -> tuple[Pipeline, RunConfig]:
    """Behaviour, rules and attribution (every method of ``METHODS``) for ``model``; reused when present."""
    config = load_config(None, {"model.name": model, "attribution.methods": list(METHODS)})
    pipe = Pipeline(config, out / model.replace(":", "_"))
    for stage in ("measure", "rules", "attribute"):
        getattr(pipe, stage)()
    return pipe, config


def setup_for(pipe: Pipeline, config: RunConfig) -> LocalizationSetup:
    every = config.model_copy(
        update={"attribution": config.attribution.model_copy(update={"methods": ("atp",), "top_m": "100%"})}
    )
    pipe.config = every
    return prepare(pipe.context())


def shortlist(pipe: Pipeline, rule_id: str, method: str, top_m: str, kind: str) -> list[Any]:
    scores = load_file(str(pipe.rundir.path / "attribution" / f"rule_{rule_id}.safetensors"))[method]
    return select_candidates(scores, kind, top_m)  # type: ignore[arg-type]


def rejudge(records: Sequence[TraceRecord], config: SearchConfig) -> list[TraceRecord]:
    """The same singleton counts judged by another predicate."""
    out = []
    for r in records:
        ev = evaluate_counts(r.counts, config)
        decision = "catastrophic" if ev.catastrophic else ("agonist" if ev.accepted else "leaf_weak")
        out.append(replace(r, evaluation=ev, decision=decision))
    return out


def shortlist_table(pipe, setup, population: BruteForceResult, kind: str) -> list[dict[str, Any]]:
    rows = []
    ucb = rejudge(population.records, SearchConfig())
    for spec in (s for s in setup.specs if not s.skipped):
        records = [r for r in ucb if r.problem == spec.key and r.decision == "agonist"]
        for method in METHODS:
            for top_m in SHORTLISTS:
                chosen = set(shortlist(pipe, spec.rule_id, method, top_m, kind))
                row = {"problem": spec.key, "method": method, "top_m": top_m}
                for edge in (0.5, 0.3):
                    strong = [r for r in records if effect(r) >= edge]
                    kept = sum(r.units[0] in chosen for r in strong)
                    row[f">= {edge}"] = f"{kept}/{len(strong)}"
                rows.append(row)
    return rows


def cha_rows(pipe, setup, population: BruteForceResult, config: RunConfig, kind: str) -> list[dict[str, Any]]:
    rows = []
    base = search_config(config)
    regimes = {s.key: s.regime for s in setup.specs}
    for top_m in ("50%", "100%"):
        problems = []
        for problem in setup.search_problems:
            spec = next(s for s in setup.specs if s.key == problem.key)
            chosen = shortlist(pipe, spec.rule_id, "atp", top_m, kind)
            scores = {u: problem.scores[u] for u in chosen} if problem.scores else None
            problems.append(SearchProblem(problem.key, chosen, scores))
        started = time.perf_counter()
        brute_force(problems, setup.oracle, base)  # timed only: the population sweep judges
        bf_wall = time.perf_counter() - started
        for predicate in PREDICATES:
            cfg = replace(base, predicate=predicate)
            started = time.perf_counter()
            cha = search(problems, setup.oracle, cfg)
            cha_wall = time.perf_counter() - started
            judged = rejudge(population.records, cfg)
            pop = []
            for p in problems:
                chosen = set(p.candidates)
                mine = [r for r in judged if r.problem == p.key]
                pop.append(
                    PopulationProblem(
                        p.key,
                        regimes[p.key],
                        len(mine),
                        [r for r in mine if r.units[0] in chosen],
                        [r for r in mine if r.units[0] not in chosen],
                        frozenset(a.unit for a in cha.agonists_for(p.key)),
                    )
                )
            totals = by_regime(pop)
            ratios = [s.group_evaluations / s.n_candidates for s in cha.problems if s.n_candidates]
            above = [a for a in cha.agonists if max(a.covered.rate, a.unrelated.rate) >= cfg.tau]
            truth = {
                (r.problem, r.units[0])
                for r in judged
                if effect(r) >= cfg.tau and not r.evaluation.catastrophic
            }
            found = {(a.problem, a.unit) for a in cha.agonists}
            row = {
                "top_m": top_m,
                "predicate": predicate,
                "cost_ratio_max": round(max(ratios, default=0.0), 3),
                "cost_ratio": round(
                    cha.group_evaluations / max(1, sum(len(p.candidates) for p in problems)), 3
                ),
                "wall_ratio": round(cha_wall / bf_wall, 3) if bf_wall else None,
                "density": {
                    str(s.problem): round(s.n_agonists / s.n_candidates, 3)
                    for s in cha.problems
                    if s.n_candidates
                },
                "precision_observed": round(len(above) / len(cha.agonists), 3) if cha.agonists else None,
                "recall_of_observed_tau": round(len(found & truth) / len(truth), 3) if truth else None,
            }
            for regime, bins in totals.items():
                for edge, count in bins.items():
                    d = count.to_dict()
                    total = count.in_shortlist + count.sampled
                    row[f"{regime} >= {edge}"] = f"{count.found}/{total}" + (
                        f" ({d['recall']:.2f})" if d["recall"] is not None else ""
                    )
            rows.append(row)
    return rows


def print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n### {title}\n")
    if not rows:
        print("(none)")
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/mecharule-bench-localize"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-cha", action="store_true", help="shortlist recall only")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for model in args.models:
        started = time.perf_counter()
        pipe, config = run_dir_for(model, args.out)
        kind = config.units.kind
        setup = setup_for(pipe, config)
        population = brute_force(setup.search_problems, setup.oracle, search_config(config))
        n_units = len(setup.all_units)
        short = shortlist_table(pipe, setup, population, kind)
        cha = [] if args.skip_cha else cha_rows(pipe, setup, population, config, kind)
        results[model] = {
            "n_units": n_units,
            "shortlist": short,
            "cha": cha,
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(
            f"\n## {model}: {n_units} units, {len(setup.search_problems)} problems "
            f"({results[model]['seconds']} s)"
        )
        print_rows("shortlist recall of brute-force agonists (observed effect) per method and top-M", short)
        print_rows("CHA vs brute force (all units; 'x/y (r)' = found / agonists in the bin)", cha)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
