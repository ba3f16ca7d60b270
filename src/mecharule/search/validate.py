"""Brute-force validation: every candidate ablated alone through the same oracle, side by side with
CHA in one process (same problems, same prompts, same machine load), → ``validation.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mecharule.config import LocalizeConfig
from mecharule.io.rundir import write_json
from mecharule.search.group_testing import bound, brute_force, recall_by_effect_bin
from mecharule.search.localize import LocalizationSetup, Tick, run_search, search_config


def _forwards(setup: Any) -> int:
    return sum(p.engine.stats.forwards for p in setup.problems.values())


def validate(
    run_dir: Path,
    cfg: LocalizeConfig,
    setup: LocalizationSetup,
    *,
    seed: int,
    tick: Tick | None = None,
) -> dict[str, Any]:
    """CHA and brute force over the same prepared problems, timed side by side → ``validation.json``."""
    before = _forwards(setup)
    cha, cha_wall = run_search(setup, cfg, seed, tick)
    cha_forwards = _forwards(setup) - before
    started = time.perf_counter()
    bf = brute_force(setup.search_problems, setup.oracle, search_config(cfg, seed))
    bf_wall = time.perf_counter() - started
    bf_forwards = _forwards(setup) - before - cha_forwards
    recall = recall_by_effect_bin(bf, cha)
    problems = []
    for stats in bf.problems:
        key = stats.problem
        bf_units = sorted(str(a.unit) for a in bf.agonists if a.problem == key)
        cha_units = sorted(str(a.unit) for a in cha.agonists if a.problem == key)
        cha_evals = next(p.group_evaluations for p in cha.problems if p.problem == key)
        k = len(bf_units)
        problems.append(
            {
                "key": key,
                "n_candidates": stats.n_candidates,
                "bf_agonists": bf_units,
                "cha_agonists": cha_units,
                "recall": round(len(set(bf_units) & set(cha_units)) / k, 4) if k else None,
                "cha_group_evaluations": cha_evals,
                "bound": round(bound(k, stats.n_candidates), 1) if stats.n_candidates else None,
                "within_bound": cha_evals <= bound(k, stats.n_candidates) if stats.n_candidates else None,
            }
        )
    payload = {
        "problems": problems,
        "recall": recall.to_dict(),
        "cost": {
            "cha_group_evaluations": cha.group_evaluations,
            "bf_singleton_evaluations": bf.n_singletons,
            "cost_ratio": round(cha.group_evaluations / max(1, bf.n_singletons), 4),
            "note": "cost ratio = CHA group evaluations / N singleton evaluations (not the reference's 2N-1)",
        },
        "wall_seconds": {
            "cha": round(cha_wall, 3),
            "brute_force": round(bf_wall, 3),
            "ratio": round(cha_wall / bf_wall, 4) if bf_wall else None,
        },
        "forwards": {"cha": cha_forwards, "brute_force": bf_forwards},
    }
    write_json(run_dir / "validation.json", payload)
    return payload
