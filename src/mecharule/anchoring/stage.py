"""The anchoring stage: flip table (``flips.parquet``) and neuron-anchored rules (``neuron_rules.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mecharule.anchoring.flips import agonists_from_summary, evaluation_rows, flip_table
from mecharule.anchoring.neuron_rules import anchor_units, hq_counts
from mecharule.config import AnchorConfig, LocalizeConfig, RulesConfig
from mecharule.io.journal import Journal
from mecharule.io.rundir import read_json, write_json, write_parquet
from mecharule.localization.stage import value_tables
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import Site, UnitKind
from mecharule.rules.stage import feature_glossary, load_rule_inputs
from mecharule.tasks.base import Task


def random_control_units(
    handle: ModelHandle, kind: UnitKind, exclude: set[Site], n: int, seed: int
) -> list[Site]:
    pool = [
        Site(layer, kind, i)
        for layer in range(handle.arch.n_layers)
        for i in range(handle.arch.width(kind))
        if Site(layer, kind, i) not in exclude
    ]
    rng = np.random.default_rng([seed, 17])
    pick = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return [pool[i] for i in sorted(pick)]


def anchor(
    handle: ModelHandle,
    task: Task,
    run_dir: Path,
    cfg: AnchorConfig,
    localize_cfg: LocalizeConfig,
    rules_cfg: RulesConfig,
    *,
    kind: UnitKind,
    seed: int,
    journal: Journal | None = None,
) -> dict[str, Any]:
    """The flip table of the strongest agonists and their random controls, then the rules anchored
    in each unit → ``flips.parquet`` and ``neuron_rules.json``.

    ``journal``: keep each unit's flip column and anchored-rule entry there as it is finished, and
    take those an earlier (killed) run kept, so a kill loses at most the units in flight; the
    reference tables and the baseline pass are recomputed on resume. The caller discards it.
    """
    behaviour, features, defs = load_rule_inputs(run_dir)
    glossary = feature_glossary(defs, features)
    localized = agonists_from_summary(read_json(run_dir / "localization" / "summary.json"), 10**9)
    agonists = [site for site, _ in localized[: cfg.max_agonists]]
    every_agonist = {site for site, _ in localized}  # controls avoid agonists of ANY rule or regime
    controls = random_control_units(handle, kind, every_agonist, len(agonists) * cfg.n_random_controls, seed)
    rows = evaluation_rows(len(behaviour), cfg.max_eval_prompts, seed)
    tables = value_tables(handle, behaviour, kind, localize_cfg, seed, run_dir)
    flips, dropped = flip_table(
        handle,
        task,
        behaviour,
        rows,
        agonists + controls,
        tables,
        localize_cfg.positions,
        localize_cfg.memory_budget_mb,
        journal,
    )
    write_parquet(
        run_dir / "flips.parquet", flips.drop(columns=[str(u) for u in controls]), {"dropped": dropped}
    )
    common: dict[str, Any] = {
        "extractor": rules_cfg.extractor,
        "options": dict(rules_cfg.options) | dict(cfg.rule_options),
        "seed": seed,
        "min_coverage": cfg.min_coverage,
        "hq_threshold": cfg.hq_threshold,
        "journal": journal,
    }
    anchored = anchor_units(flips, features, [str(u) for u in agonists], glossary, **common)
    control_entries = anchor_units(
        flips, features, [str(u) for u in controls], glossary, **common, targets=("any",)
    )
    payload = {
        "n_agonists": len(agonists),
        "n_eval": len(flips),
        "dropped_unreproduced": dropped,
        "evaluation": "all prompts"
        if len(rows) == len(behaviour)
        else f"seeded random sample of {len(rows)}",
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
                "units": [str(u) for u in controls],
                "hq_counts": hq_counts([c["best"] for c in control_entries]),
                "flip_rate_any_mean": round(
                    float(np.mean([c["flip_rates"]["any"] for c in control_entries])), 4
                )
                if control_entries
                else None,
            },
        },
    }
    write_json(run_dir / "neuron_rules.json", payload)
    return payload
