"""The localize and validate stages as the pipeline runs them: prepare the problems, say what the
search will cost, search (and brute-force, for validate) under a progress bar."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import pandas as pd

from mecharule.context import StageContext
from mecharule.errors import ConfigError
from mecharule.estimates import expected_cha_evaluations, group_testing_estimate
from mecharule.executor import AblationData, Executor, ProblemData, make_executor
from mecharule.executor.engines import table_data
from mecharule.interventions.engine import AblationEngine
from mecharule.localization.oracle import EngineInputs
from mecharule.localization.stage import LocalizationSetup, localize, prepare
from mecharule.localization.validate import outside_problems, validate
from mecharule.progress import grow_total

PROBLEM_FILES = ("trace.jsonl", "agonists.csv")  # per problem folder under localization/


def run_localize(ctx: StageContext) -> list[str]:
    setup, expected = _prepared(ctx, "localize")
    label = "localize (group evaluations; the total grows as CHA splits)"
    with ctx.progress(label, round(expected)) as tick, executing(ctx, setup):
        summary = localize(ctx, setup, _cumulative(tick))
    folders = [p["key"].replace("/", "_") for p in summary["problems"] if not p["skipped"]]
    return ["localization/summary.json"] + [
        f"localization/{folder}/{name}" for folder in folders for name in PROBLEM_FILES
    ]


def run_validate(ctx: StageContext) -> list[str]:
    setup, expected = _prepared(ctx, "validate")
    brute = sum(len(p.candidates) for p in setup.search_problems)
    outside = sum(len(p.candidates) for p in outside_problems(setup, ctx.config.validation, ctx.seed))
    label = "validate (CHA, brute force, brute force outside the shortlist)"
    with ctx.progress(label, round(expected) + brute + outside) as tick, executing(ctx, setup):
        validate(ctx, setup, tick)
    return ["validation.json"]


@contextmanager
def executing(ctx: StageContext, setup: LocalizationSetup) -> Iterator[Executor]:
    """The configured executor, open on the setup's problems, as the oracle's; closed after."""
    sources = {
        str(key): (problem.engine, problem.source)
        for key, problem in setup.problems.items()
        if problem.source is not None
    }
    with executing_engines(ctx, sources, setup.inputs) as executor:
        setup.oracle.executor = executor
        try:
            yield executor
        finally:
            setup.oracle.executor = None


@contextmanager
def executing_engines(
    ctx: StageContext, sources: Mapping[str, tuple[AblationEngine, pd.DataFrame]], inputs: EngineInputs
) -> Iterator[Executor]:
    """The configured executor over the driver's engines (``{key: (engine, the prompt rows it was
    built on)}``); a remote one gets the problems as data first. Closed after."""
    if ctx.config.executor.kind != "local" and ctx.model_in_memory:
        raise ConfigError(
            "executor.kind 'ray' loads the model on each worker by name; a model passed in memory "
            "cannot be shipped: pass its path (model.name) instead"
        )
    executor = make_executor(ctx.config, {key: engine for key, (engine, _) in sources.items()})
    try:
        if not executor.local:  # replicas build their engines from the problems as data
            executor.open(problem_data(ctx, sources, inputs))
        yield executor
    finally:
        executor.close()


def problem_data(
    ctx: StageContext, sources: Mapping[str, tuple[AblationEngine, pd.DataFrame]], inputs: EngineInputs
) -> dict[str, ProblemData]:
    """The problems as data: prompt rows, dropped rows, ablation (tables as numpy)."""
    ablation = AblationData(table_data(inputs.tables), inputs.positions, ctx.memory_budget_mb)
    return {
        key: ProblemData.of(key, source, engine.dropped.tolist(), ablation)
        for key, (engine, source) in sources.items()
    }


def _prepared(ctx: StageContext, stage: str) -> tuple[LocalizationSetup, float]:
    """The setup, and CHA's expected group evaluations (said in one line with the time they take)."""
    setup = prepare(ctx)
    line, expected = calibrate_search(ctx, setup)
    ctx.notify(f"{stage}: {line}")
    return setup, expected


def calibrate_search(ctx: StageContext, setup: LocalizationSetup) -> tuple[str, float]:
    """Time one single-unit group evaluation on the first problem; extrapolate the stage. Returns
    the line to show and CHA's expected group evaluations."""
    sizes = [len(p.candidates) for p in setup.search_problems]
    if not setup.problems or not setup.search_problems or not sizes[0]:
        reasons = "; ".join(f"{spec.key}: {spec.skipped}" for spec in setup.specs if spec.skipped)
        return "nothing to search" + (f" ({reasons})" if reasons else ""), 0.0
    engine = next(iter(setup.problems.values())).engine
    started = time.perf_counter()
    engine.run([[setup.search_problems[0].candidates[0]]])  # type: ignore[list-item]
    roots = [
        [sum(u.layer == layer for u in p.candidates) for layer in sorted({u.layer for u in p.candidates})]
        for p in setup.search_problems
    ]
    seconds = time.perf_counter() - started
    audit = ctx.config.search.audit
    return group_testing_estimate(roots, seconds, audit=audit), expected_cha_evaluations(roots, audit=audit)


def _cumulative(tick: Callable[[int], None]) -> Callable[[int, int], None]:
    """Adapt a bar's ``update(delta)`` to CHA's ``(done so far, open frontier)`` callback; the bar's
    total grows to at least what is done plus what is open."""
    seen = [0]

    def callback(done: int, frontier: int) -> None:
        grow_total(tick, done + frontier)
        tick(done - seen[0])
        seen[0] = done

    return callback


__all__ = [
    "PROBLEM_FILES",
    "calibrate_search",
    "executing",
    "executing_engines",
    "problem_data",
    "run_localize",
    "run_validate",
]
