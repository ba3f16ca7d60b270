"""The localize and validate stages as the pipeline runs them: prepare the problems, say what the
search will cost, search (and brute-force, for validate) under a progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable

from mecharule.context import StageContext
from mecharule.estimates import group_testing_estimate
from mecharule.localization.stage import LocalizationSetup, localize, prepare
from mecharule.localization.validate import validate

PROBLEM_FILES = ("trace.jsonl", "agonists.csv")  # per problem folder under localization/


def run_localize(ctx: StageContext) -> list[str]:
    setup = _prepared(ctx, "localize")
    with ctx.progress("localize (group evaluations)", None) as tick:
        summary = localize(ctx, setup, _cumulative(tick))
    folders = [p["key"].replace("/", "_") for p in summary["problems"] if not p["skipped"]]
    return ["localization/summary.json"] + [
        f"localization/{folder}/{name}" for folder in folders for name in PROBLEM_FILES
    ]


def run_validate(ctx: StageContext) -> list[str]:
    setup = _prepared(ctx, "validate")
    with ctx.progress("validate (CHA + brute force)", None) as tick:
        validate(ctx, setup, _cumulative(tick))
    return ["validation.json"]


def _prepared(ctx: StageContext, stage: str) -> LocalizationSetup:
    setup = prepare(ctx)
    ctx.notify(f"{stage}: " + calibrate_search(ctx, setup))
    return setup


def calibrate_search(ctx: StageContext, setup: LocalizationSetup) -> str:
    """Time one single-unit group evaluation on the first problem; extrapolate the stage."""
    sizes = [len(p.candidates) for p in setup.search_problems]
    if not setup.problems or not setup.search_problems or not sizes[0]:
        reasons = "; ".join(f"{spec.key}: {spec.skipped}" for spec in setup.specs if spec.skipped)
        return "nothing to search" + (f" ({reasons})" if reasons else "")
    engine = next(iter(setup.problems.values())).engine
    started = time.perf_counter()
    engine.run([[setup.search_problems[0].candidates[0]]])  # type: ignore[list-item]
    roots = [
        [sum(u.layer == layer for u in p.candidates) for layer in sorted({u.layer for u in p.candidates})]
        for p in setup.search_problems
    ]
    seconds = time.perf_counter() - started
    return group_testing_estimate(roots, seconds, audit=ctx.config.search.audit)


def _cumulative(tick: Callable[[int], None]) -> Callable[[int, int], None]:
    """Adapt a bar's ``update(delta)`` to a ``(done_so_far, open)`` callback."""
    seen = [0]

    def callback(done: int, _open: int) -> None:
        tick(done - seen[0])
        seen[0] = done

    return callback


__all__ = ["PROBLEM_FILES", "calibrate_search", "run_localize", "run_validate"]
