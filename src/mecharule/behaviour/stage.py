"""The measure stage: the task's prompts (subsampled, few-shot formatted), the model's answers
scored into ``behaviour.parquet``, and the prompt features (seed features, plus LLM-proposed ones
when enabled) into ``features.parquet`` and ``features.json``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mecharule.context import StageContext
from mecharule.estimates import calibrating_tick
from mecharule.features.base import Feature, compute_feature_table
from mecharule.io.rundir import write_json, write_parquet
from mecharule.tasks.base import Task

OUTPUTS = ["behaviour.parquet", "features.parquet", "features.json"]


def run_measure(ctx: StageContext, partial: str) -> list[str]:
    """Measure the run's task; ``partial``: the folder (in the run directory) that keeps finished
    batches of an interrupted measure."""
    from mecharule.behaviour.measure import MeasureSettings, measure_behaviour
    from mecharule.reference_cache import FOLDER
    from mecharule.tasks.formats import format_task_prompts

    ctx.rundir.remove([FOLDER])  # reference tables and pools of the previous measure
    task = ctx.task
    shots, prompts = task_prompts(ctx, task)
    features = list(task.seed_features())
    feature_table = compute_feature_table(features, prompts)
    prompts = format_task_prompts(task, prompts, ctx.handle.tokenizer, shots)
    batch = ctx.sizing.batch_size
    with ctx.progress(f"measure ({len(prompts):,} prompts, batches of {batch})", len(prompts)) as bar:
        settings = MeasureSettings(
            batch_size=batch,
            test_fraction=ctx.config.task.test_fraction,
            seed=ctx.seed,
            partial_dir=ctx.rundir.file(partial),
        )
        table = measure_behaviour(
            ctx.handle, task, prompts, settings, calibrating_tick(bar, len(prompts), "measure", ctx.notify)
        )
    provenance = {
        "task": task.name,
        "task_options": task.options(),
        "model": ctx.config.model.name,
        "shots": shots["prompt"].astype(str).tolist(),
    }
    definitions = [f.definition() for f in features]
    proposal_log: dict[str, Any] = {}
    if ctx.config.task.propose_features.enabled:
        extra_table, proposal_log, extra_defs = _proposed(ctx, prompts, table, features)
        feature_table = pd.concat([feature_table, extra_table], axis=1)
        definitions += extra_defs
    write_parquet(ctx.rundir.file("features.parquet"), feature_table, provenance)
    write_json(
        ctx.rundir.file("features.json"), {"features": definitions, "proposal": proposal_log, **provenance}
    )
    write_parquet(
        ctx.rundir.file("behaviour.parquet"), table, {**provenance, "positive_label": task.positive_label}
    )
    return OUTPUTS


def task_prompts(ctx: StageContext, task: Task) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(shots, prompts)``: the few-shot examples (none unless the format is fewshot) and the prompts
    to evaluate, a seeded subsample when the sizing caps them."""
    from mecharule.tasks.formats import draw_shots

    prompts = task.prompts()
    shots = prompts.iloc[:0]
    if getattr(task, "prompt_format", "raw") == "fewshot":
        shots, prompts = draw_shots(prompts, int(task.n_shots), ctx.seed)  # type: ignore[attr-defined]
    max_prompts = ctx.sizing.max_prompts
    if max_prompts is not None and max_prompts < len(prompts):
        rng = ctx.rng("measure.subsample")
        keep = np.sort(rng.choice(len(prompts), size=max_prompts, replace=False))
        prompts = prompts.iloc[keep].reset_index(drop=True)
    return shots, prompts


def _proposed(
    ctx: StageContext, prompts: pd.DataFrame, table: pd.DataFrame, seed_features: list[Feature]
) -> tuple[pd.DataFrame, dict[str, Any], list[Any]]:
    """Features an LLM proposes (``task.propose_features``): their table, the log, their definitions."""
    from mecharule.features.stage import ProposalInputs, proposal_source, proposed_features
    from mecharule.llm.client import ChatClient

    cfg = ctx.config.task.propose_features
    with ctx.progress("propose features (LLM + sandbox)", None):
        inputs = ProposalInputs(
            prompts, table["label"].to_numpy(bool), (table["split"] == "train").to_numpy(), seed_features
        )
        client = ChatClient.from_env(cache_dir=ctx.rundir.file(".llm_cache"))
        extra, extra_table, log = proposed_features(ctx.task, inputs, cfg, client=client, seed=ctx.seed)
    return extra_table, log, [proposal_source(f) for f in extra]


__all__ = ["OUTPUTS", "run_measure", "task_prompts"]
