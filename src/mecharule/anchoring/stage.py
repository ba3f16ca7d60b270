"""The anchoring stage: flip table (``flips.parquet``) and neuron-anchored rules (``neuron_rules.json``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from mecharule.anchoring.cards import agonist_cards
from mecharule.anchoring.flips import agonists_from_summary, evaluation_rows, flip_table
from mecharule.anchoring.neuron_rules import AnchorFit, anchor_units, hq_counts
from mecharule.config import AnchorConfig
from mecharule.context import StageContext
from mecharule.io.rundir import read_json, write_json, write_parquet
from mecharule.localization.oracle import EngineInputs
from mecharule.localization.stage import value_tables
from mecharule.models.sites import Site
from mecharule.rules.stage import feature_glossary, load_rule_inputs


def random_control_units(ctx: StageContext, exclude: set[Site], n: int) -> list[Site]:
    """``n`` units of the run's kind drawn at random (seeded) among those not in ``exclude``."""
    kind, arch = ctx.config.units.kind, ctx.handle.arch
    pool = [
        Site(layer, kind, i)
        for layer in range(arch.n_layers)
        for i in range(arch.width(kind))
        if Site(layer, kind, i) not in exclude
    ]
    pick = ctx.rng("anchor.controls").choice(len(pool), size=min(n, len(pool)), replace=False)
    return [pool[i] for i in sorted(pick)]


def anchor(ctx: StageContext) -> dict[str, Any]:
    """The flip table of the strongest agonists and their random controls, then the rules anchored
    in each unit → ``flips.parquet`` and ``neuron_rules.json``.

    With ``ctx.journal``, keep each unit's flip column and anchored-rule entry there as it is
    finished, and take those an earlier (killed) run kept, so a kill loses at most the units in
    flight; the reference tables and the baseline pass are recomputed on resume. The caller
    discards the journal.
    """
    cfg = ctx.config.anchor
    behaviour, features, defs = load_rule_inputs(ctx.path)
    summary = read_json(ctx.path / "localization" / "summary.json")
    localized = agonists_from_summary(summary, 10**9)
    agonists = [site for site, _ in localized[: cfg.max_agonists]]
    every_agonist = {site for site, _ in localized}  # controls avoid agonists of ANY rule or regime
    controls = random_control_units(ctx, every_agonist, len(agonists) * cfg.n_random_controls)
    rows = evaluation_rows(len(behaviour), cfg.max_eval_prompts, ctx.seed)
    inputs = EngineInputs(
        ctx.handle,
        ctx.task,
        value_tables(ctx, behaviour),
        ctx.config.ablation.positions,
        ctx.memory_budget_mb,
    )
    units = agonists + controls
    label = f"anchor ({len(units)} units: flip table, their rules, the agonists' cards)"
    with ctx.progress(label, 2 * len(units) + 1) as tick:
        flips, dropped = flip_table(ctx, inputs, behaviour, rows, units, tick)
        anchored, control_entries = _anchored(ctx, (flips, features, defs), (agonists, controls), tick)
        rules = agonist_rules(ctx, summary, agonists)
        cards = agonist_cards(ctx, inputs, (behaviour, features, flips), agonists, rules)
        tick(1)
    write_json(ctx.path / CARDS_FILE, cards)
    write_parquet(
        ctx.path / "flips.parquet", flips.drop(columns=[str(u) for u in controls]), {"dropped": dropped}
    )
    evaluation = "all prompts" if len(rows) == len(behaviour) else f"seeded random sample of {len(rows)}"
    payload = _payload(cfg, (evaluation, dropped), flips, anchored, (controls, control_entries))
    write_json(ctx.path / "neuron_rules.json", payload)
    return payload


CARDS_FILE = "agonist_cards.json"


def agonist_rules(
    ctx: StageContext, summary: Mapping[str, Any], agonists: list[Site]
) -> dict[Site, dict[str, Any]]:
    """Each agonist's behaviour rule: that of the problem where its covered flip rate was highest in
    the localization ``summary``."""
    disjuncts = {d["id"]: d for d in read_json(ctx.path / "rules.json").get("disjuncts", [])}
    best: dict[str, tuple[float, str]] = {}
    for problem in summary.get("problems", []):
        for entry in problem.get("agonists", []):
            rate = float(entry.get("covered_rate") or 0.0)
            if entry["unit"] not in best or rate > best[entry["unit"]][0]:
                best[entry["unit"]] = (rate, problem["rule_id"])
    return {
        u: disjuncts[best[str(u)][1]] for u in agonists if str(u) in best and best[str(u)][1] in disjuncts
    }


def _anchored(
    ctx: StageContext,
    data: tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]],
    units: tuple[list[Site], list[Site]],
    tick: Callable[[int], None],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The anchored rules of the agonists (every flip target) and of the controls (target 'any').
    ``data``: the flip table, the features and their definitions."""
    flips, features, defs = data
    agonists, controls = units
    cfg, rules = ctx.config.anchor, ctx.config.rules
    fit = AnchorFit(
        feature_glossary(defs, features),
        rules.extractor,
        dict(rules.options) | dict(cfg.rule_options),
        ctx.seed,
        cfg.min_coverage,
        cfg.hq_threshold,
        ctx.journal,
        tick,
    )
    anchored = anchor_units(flips, features, [str(u) for u in agonists], fit)
    control_entries = anchor_units(flips, features, [str(u) for u in controls], fit, targets=("any",))
    return anchored, control_entries


def _payload(
    cfg: AnchorConfig,
    evaluation: tuple[str, int],
    flips: pd.DataFrame,
    anchored: list[dict[str, Any]],
    controls: tuple[list[Site], list[dict[str, Any]]],
) -> dict[str, Any]:
    """``neuron_rules.json``. ``evaluation``: which prompts were evaluated, and how many dropped."""
    evaluated, dropped = evaluation
    control_units, control_entries = controls
    payload = {
        "n_agonists": len(anchored),
        "n_eval": len(flips),
        "dropped_unreproduced": dropped,
        "evaluation": evaluated,
        "hq_threshold": cfg.hq_threshold,
        "min_coverage": cfg.min_coverage,
        "agonists": anchored,
        "hq_counts": hq_counts([a["best"] for a in anchored]),
        "controls": {
            "fake_target": {
                "note": "same extraction on permuted flip labels (seeded), best target per agonist",
                "hq_counts": hq_counts([a["best_control"] for a in anchored]),
            },
            "random_neurons": {
                "note": "random non-agonist units of the same count, flip target 'any'",
                "units": [str(u) for u in control_units],
                "hq_counts": hq_counts([c["best"] for c in control_entries]),
                "flip_rate_any_mean": round(
                    float(np.mean([c["flip_rates"]["any"] for c in control_entries])), 4
                )
                if control_entries
                else None,
            },
        },
    }
    return payload
