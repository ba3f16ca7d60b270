"""Are agonists sparse on a real model? Brute force over a uniform sample of units beside CHA.

For an existing run directory with rules (e.g. ``mecharule run --config examples/smollm2-arithmetic.yaml``
on SmolLM2-135M-Instruct), per (rule, regime) problem: a seeded uniform sample of ``--n-units`` units
from ``--layers`` is (1) ablated one by one (brute force) and (2) searched by CHA as its candidate
set, unscored (a seeded shuffle orders the halves), with the run's localize settings and the
pipeline's default predicate. Reported: the share of sampled units whose observed effect (flip rate
alone, larger slice) reaches 0.2, 0.3 and 0.5, the density k/N of accepted agonists, CHA's
evaluations against brute force's, its recall, and both wall times (measured side by side).

    python benchmarks/density_sample.py --run-dir DIR [--layers 3 10 17 24] [--n-units 512]
        [--regimes positive]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mecharule.config import load_config
from mecharule.io.rundir import read_json
from mecharule.localization.stage import prepare, search_config
from mecharule.models.sites import Site
from mecharule.pipeline import Pipeline
from mecharule.search import SearchProblem, search
from mecharule.search.brute_force import brute_force
from mecharule.search.population import effect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 10, 17, 24])
    parser.add_argument("--n-units", type=int, default=512)
    parser.add_argument("--regimes", nargs="+", default=["positive"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    stored = read_json(args.run_dir / "run.json")["config"]
    settings = {"search.regimes": args.regimes, "search.predicate": "observed", "attribution.top_m": 1}
    config = load_config(None, settings, base=stored)
    pipe = Pipeline(config, args.run_dir)
    setup = prepare(pipe.context())
    kind = config.units.kind
    width = pipe.handle.arch.width(kind)
    population = [Site(layer, kind, i) for layer in args.layers for i in range(width)]
    rng = np.random.default_rng(args.seed)
    sample = [population[i] for i in sorted(rng.choice(len(population), args.n_units, replace=False))]
    problems = [SearchProblem(p.key, sample) for p in setup.search_problems]
    cfg = search_config(config)
    started = time.perf_counter()
    bf = brute_force(problems, setup.oracle, cfg)
    bf_wall = time.perf_counter() - started
    started = time.perf_counter()
    cha = search(problems, setup.oracle, cfg)
    cha_wall = time.perf_counter() - started
    out = {
        "model": config.model.name,
        "layers": args.layers,
        "n_units": args.n_units,
        "population": len(population),
        "problems": [],
    }
    for stats in cha.problems:
        records = [r for r in bf.records if r.problem == stats.problem]
        effects = np.array([effect(r) for r in records])
        reference = {r.units[0] for r in records if r.decision == "agonist"}
        found = {a.unit for a in cha.agonists_for(stats.problem)}
        slices = setup.problems[stats.problem]
        row = {
            "problem": stats.problem,
            "prompts": f"{slices.n_covered} covered + {slices.n_unrelated} unrelated",
            **{f"share effect >= {t}": round(float((effects >= t).mean()), 4) for t in (0.2, 0.3, 0.5)},
            "max effect": round(float(effects.max()), 4),
            "density k/N": round(len(reference) / len(records), 4),
            "cha evaluations": stats.group_evaluations,
            "bf evaluations": len(records),
            "cost ratio": round(stats.group_evaluations / len(records), 4),
            "cha recall": round(len(found & reference) / len(reference), 4) if reference else None,
        }
        out["problems"].append(row)
        print(json.dumps(row))
    out["wall_seconds"] = {
        "brute_force": round(bf_wall, 1),
        "cha": round(cha_wall, 1),
        "ratio": round(cha_wall / bf_wall, 4),
    }
    print(json.dumps(out["wall_seconds"]))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
