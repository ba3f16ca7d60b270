"""Brute-force validation, side by side with CHA in one process (same problems, same prompts, same
machine load) → ``validation.json``.

Three measurements per (rule, regime):

1. CHA over the candidates, then brute force over the same candidates: the cost ratio (group
   evaluations / singletons), the wall-time ratio, and CHA's recall *within the shortlist*;
2. brute force over the units of the searched layers that are NOT candidates: all of them when the
   layers hold at most ``validate_exhaustive_max`` units, else a seeded uniform sample of
   ``validate_outside_sample``; from it, the recall over **all units** and the shortlist's own recall,
   with the agonists it dropped named (:mod:`mecharule.search.population`);
3. the density k/N, the precision of the predicate (share of reported agonists whose observed effect
   reaches τ) and whether CHA could save anything on this problem.

Checkpoints: with a :class:`~mecharule.io.journal.Journal`, every oracle answer is journaled as it is
computed, under one namespace per measurement (``cha``, ``bf``, ``bf-outside``: each resumes exactly
as it ran, never with another's answers); a resumed run re-issues the same (seeded) queries and
takes the finished answers from the journal without engine work. :func:`~.stage.prepare`
(baselines, reference tables, spectral sampling) is not journaled: a resumed run recomputes it.
Reported costs (group evaluations, singletons, forwards) are those of one uninterrupted run; wall
times are those of this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mecharule.config import ValidationConfig
from mecharule.context import StageContext
from mecharule.io.rundir import write_json
from mecharule.localization.oracle import EngineOracle, EngineWork
from mecharule.localization.stage import LocalizationSetup, run_search, search_config
from mecharule.random_streams import stream
from mecharule.search.brute_force import brute_force
from mecharule.search.population import validation_payload
from mecharule.search.types import SearchProblem


def _forwards(setup: LocalizationSetup, *oracles: EngineOracle) -> int:
    """Forwards on the setup's engines so far, plus those the oracles' journaled answers and other
    executors' replicas cost."""
    elsewhere = sum(o.replayed_work.forwards + o.remote_work.forwards for o in oracles)
    return EngineWork.of(setup.problems.values()).forwards + elsewhere


def outside_problems(setup: LocalizationSetup, cfg: ValidationConfig, seed: int) -> list[SearchProblem]:
    """Per problem, the non-candidate units of its layers to brute-force: all, or a seeded sample."""
    out = []
    for index, problem in enumerate(setup.search_problems):
        chosen = set(problem.candidates)
        rest = [u for u in setup.population(problem) if u not in chosen]
        if len(rest) + len(chosen) > cfg.exhaustive_max and len(rest) > cfg.outside_sample:
            rng = stream(seed, "validation.outside", index)
            rest = [rest[i] for i in sorted(rng.choice(len(rest), cfg.outside_sample, replace=False))]
        out.append(SearchProblem(problem.key, rest))
    return out


def validate(
    ctx: StageContext, setup: LocalizationSetup, tick: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """CHA, brute force over the candidates and brute force outside them → ``validation.json``.

    With ``ctx.journal``, keep finished oracle answers there, and take those an earlier (killed) run
    of this stage kept (see the module docstring). The caller discards it. ``tick(n)``: n more group
    evaluations answered, by any of the three.
    """
    config = search_config(ctx.config)
    journal = ctx.journal
    cha_oracle, bf_oracle, outside_oracle = (
        setup.oracle.journaled(journal, name) for name in ("cha", "bf", "bf-outside")
    )
    for oracle in (cha_oracle, bf_oracle, outside_oracle):
        oracle.progress = tick
    before = _forwards(setup)
    cha, cha_wall = run_search(setup, config, None, cha_oracle)
    cha_forwards = _forwards(setup, cha_oracle) - before
    started = time.perf_counter()
    bf = brute_force(setup.search_problems, bf_oracle, config)
    bf_wall = time.perf_counter() - started
    bf_forwards = _forwards(setup, cha_oracle, bf_oracle) - before - cha_forwards
    outside = outside_problems(setup, ctx.config.validation, ctx.seed)
    started = time.perf_counter()
    bf_outside = brute_force([p for p in outside if p.candidates], outside_oracle, config)
    outside_wall = time.perf_counter() - started
    payload = validation_payload(
        cha,
        bf,
        bf_outside,
        regimes={spec.key: spec.regime for spec in setup.specs},
        populations={p.key: len(setup.population(p)) for p in setup.search_problems},
        config=config,
        wall_seconds={"cha": cha_wall, "brute_force": bf_wall, "brute_force_outside_shortlist": outside_wall},
        forwards={"cha": cha_forwards, "brute_force": bf_forwards},
    )
    write_json(ctx.path / "validation.json", payload)
    return payload


__all__ = ["outside_problems", "validate"]
