"""A synthetic run directory with every artifact the report reads, built without a model.

Behaviour is an arithmetic-like table whose failures follow a planted rule (multiplication with
a >= 50). ``rules.json`` comes from the real rules stage; the localization summary, traces and
``validation.json`` come from the real torch-free CHA search and brute force on a synthetic oracle
(planted agonist units); ``flips.parquet`` and ``neuron_rules.json`` are small hand-made tables in
the documented structure.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mecharule.io.rundir import SCHEMA_VERSION, write_json, write_parquet
from mecharule.models.sites import Site
from mecharule.search import (
    Query,
    SearchConfig,
    SearchProblem,
    SliceCounts,
    brute_force,
    search,
)
from mecharule.search.population import validation_payload

TASK_OPTIONS = {"operators": "+-*", "min_operand": 0, "max_operand": 99, "max_new_tokens": 6}
N_ROWS = 600
# planted agonists: unit → (covered flips, unrelated flips) out of 64 + 64 prompts
PLANTED = {
    "R1/positive": {Site(0, "mlp", 3): (40, 2), Site(1, "mlp", 5): (20, 1), Site(1, "mlp", 11): (14, 0)},
    "R1/negative": {Site(0, "mlp", 7): (25, 3)},
}


def behaviour_table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ops = rng.choice(["+", "-", "*"], size=N_ROWS)
    a, b = rng.integers(0, 100, N_ROWS), rng.integers(0, 100, N_ROWS)
    truth = np.where(ops == "+", a + b, np.where(ops == "-", a - b, a * b))
    hard = (ops == "*") & (a >= 50)
    label = np.where(hard, rng.random(N_ROWS) < 0.1, rng.random(N_ROWS) < 0.93)
    answer = np.where(label, truth, truth + 1)
    split = np.where(rng.random(N_ROWS) < 0.25, "test", "train")
    return pd.DataFrame(
        {
            "prompt": [f"{x}{o}{y}=" for x, o, y in zip(a, ops, b, strict=True)],
            "answer": answer.astype(str),
            "label": label.astype(bool),
            "operator": ops,
            "a": a,
            "b": b,
            "truth": truth,
            "split": split,
        }
    )


def feature_table(behaviour: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    ops = behaviour["operator"]
    features = pd.DataFrame(
        {
            "op_is_mul": (ops == "*").astype(float),
            "op_is_add": (ops == "+").astype(float),
            "a": behaviour["a"].astype(float),
            "b": behaviour["b"].astype(float),
            "ones_b": (behaviour["b"] % 10).astype(float),
            "mul_carries": np.where(ops == "*", (behaviour["a"] * behaviour["b"]) // 100, np.nan).astype(
                float
            ),
        }
    )
    defs = [
        {
            "name": "op_is_mul",
            "description": "operator is *",
            "kind": "binary",
            "not_applicable": "",
            "origin": "seed",
        },
        {
            "name": "op_is_add",
            "description": "operator is +",
            "kind": "binary",
            "not_applicable": "",
            "origin": "seed",
        },
        {
            "name": "a",
            "description": "first operand <a>",
            "kind": "numeric",
            "not_applicable": "",
            "origin": "seed",
        },
        {
            "name": "b",
            "description": "second operand",
            "kind": "numeric",
            "not_applicable": "",
            "origin": "seed",
        },
        {
            "name": "ones_b",
            "description": "last digit of b",
            "kind": "numeric",
            "not_applicable": "",
            "origin": "seed",
        },
        {
            "name": "mul_carries",
            "description": "hundreds of a*b",
            "kind": "numeric",
            "not_applicable": "operator is not *",
            "origin": "seed",
        },
    ]
    return features, defs


def synthetic_oracle(queries: Sequence[Query]) -> list[SliceCounts]:
    out = []
    for query in queries:
        planted: dict[Any, tuple[int, int]] = dict(PLANTED.get(str(query.problem), {}))
        cov = min(64, sum(planted.get(u, (0, 0))[0] for u in query.units))
        unr = min(64, sum(planted.get(u, (0, 0))[1] for u in query.units))
        out.append(SliceCounts(cov, 64, unr, 64))
    return out


class _UnionOracle:
    """Each unit flips a fixed seeded set of the 128 prompts (64 covered, then 64 unrelated); a group
    flips the union of its units' sets."""

    def flips(self, key: str, groups: Any) -> np.ndarray:
        rows = np.zeros((len(groups), 128), dtype=bool)
        for row, group in zip(rows, groups, strict=True):
            for unit in group:
                row |= np.random.default_rng(unit.layer * 100 + unit.index).random(128) < 0.3
        return rows


def _recomposition(run_dir: Path) -> None:
    from mecharule.recomposition import recompose

    summary = json.loads((run_dir / "localization" / "summary.json").read_text())
    covered = np.arange(128) < 64
    problems = [
        (p["key"], covered, [Site.parse(a["unit"]) for a in p.get("agonists") or []])
        for p in summary["problems"]
    ]
    write_json(run_dir / "recomposition.json", recompose(_UnionOracle(), problems))


def _localization(run_dir: Path, rule_text: str) -> None:
    candidates = [Site(layer, "mlp", i) for layer in range(2) for i in range(16)]
    problems = [SearchProblem(key, candidates) for key in PLANTED]
    cha = search(problems, synthetic_oracle)
    bf = brute_force(problems, synthetic_oracle)
    entries = []
    for stats in cha.problems:
        key = str(stats.problem)
        folder = run_dir / "localization" / key.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        trace = [r.to_dict() for r in cha.trace if r.problem == stats.problem]
        (folder / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trace))
        agonists = [a.to_dict() for a in cha.agonists_for(stats.problem)]
        pd.DataFrame(agonists).to_csv(folder / "agonists.csv", index=False)
        entry: dict[str, Any] = {
            "key": key,
            "rule_id": "R1",
            "regime": key.split("/")[1],
            "rule": rule_text,
            "skipped": "",
            "n_covered": 64,
            "n_unrelated": 64,
            "dropped_unreproduced": 1,
            "n_candidates": stats.n_candidates,
            "group_evaluations": stats.group_evaluations,
            "levels": stats.levels,
            "agonists": agonists,
            "catastrophic": [],
        }
        entry["suppression"] = (
            {
                "agonists": [a["unit"] for a in agonists],
                "covered": {"n": 120, "positive_rate_before": 0.82, "positive_rate_after": 0.21},
                "unrelated": {"n": 120, "positive_rate_before": 0.9, "positive_rate_after": 0.85},
                "union_flip_coverage": {
                    "note": "share flipped by at least one agonist ablated ALONE",
                    "covered": 0.7,
                    "unrelated": 0.05,
                },
            }
            if agonists
            else {}
        )
        entries.append(entry)
    entries.append(
        {
            "key": "R2/positive",
            "rule_id": "R2",
            "regime": "positive",
            "rule": "b < 3",
            "skipped": "covered slice has 4 prompts (< 8)",
        }
    )
    write_json(
        run_dir / "localization" / "summary.json",
        {
            "problems": entries,
            "group_evaluations": cha.group_evaluations,
            "oracle_calls": cha.oracle_calls,
            "truncated": False,
            "n_agonists": len({str(a.unit) for a in cha.agonists}),
            "wall_seconds": 1.5,
            "forwards": 12,
            "generated_rows": 300,
        },
    )
    write_json(
        run_dir / "validation.json",
        validation_payload(
            cha,
            bf,
            brute_force([], synthetic_oracle),  # the search covered every unit: nothing outside the shortlist
            regimes={p.problem: str(p.problem).split("/")[1] for p in bf.problems},
            populations={p.problem: p.n_candidates for p in bf.problems},
            config=SearchConfig(),
            wall_seconds={"cha": 1.5, "brute_force": 3.0},
            forwards={"cha": 12, "brute_force": 40},
        ),
    )


def _target_entry(readable: str, mcc: float) -> dict[str, Any]:
    metrics = {
        scope: {"mcc": mcc + d, "coverage": 0.1} for scope, d in (("test", 0), ("train", 0.03), ("all", 0.02))
    }
    return {
        "readable": readable, "text": "op_is_mul >= 0.5 AND a >= 50", "n_conditions": 2, "metrics": metrics,
        "control": {"test_mcc": 0.01, "all_mcc": 0.02}, "reason": "",
    }  # fmt: skip


def _anchoring(run_dir: Path, behaviour: pd.DataFrame, sites: list[str]) -> None:
    """flips.parquet and neuron_rules.json in the structure of ``mecharule.anchoring.stage``; the last
    site gets no rule (too few flips)."""
    rng = np.random.default_rng(3)
    baseline = behaviour["label"].to_numpy()
    flips = pd.DataFrame(
        {"row": np.arange(len(behaviour)), "split": behaviour["split"], "baseline": baseline}
    )
    for i, site in enumerate(sites):
        flip = rng.random(len(behaviour)) < 0.05 * (i + 1)
        flips[site] = np.where(flip, ~baseline, baseline)
    write_parquet(run_dir / "flips.parquet", flips, {"dropped": 0})
    agonists, no_rule = [], {"target": None, "test_mcc": 0.0, "all_mcc": 0.0, "coverage": 0.0, "readable": ""}
    for i, site in enumerate(sites):
        base, after = baseline, flips[site].to_numpy()
        mcc = 0.92 - 0.1 * i
        readable = "operator is * AND first operand >= 50" + (" <script>alert(1)</script>" if i == 0 else "")
        has_rule = i < len(sites) - 1
        best = {"target": "true_to_false", "test_mcc": mcc, "all_mcc": mcc + 0.02, "coverage": 0.1,
                "readable": readable} if has_rule else no_rule  # fmt: skip
        agonists.append({
            "site": site, "n_eval": len(base),
            "flip_rates": {"any": float((base != after).mean()),
                           "true_to_false": float((base & ~after).mean()),
                           "false_to_true": float((~base & after).mean())},
            "targets": {
                "any": _target_entry(readable, mcc - 0.1) if has_rule else {"skipped": "1 positives"},
                "true_to_false": _target_entry(readable, mcc) if has_rule else {"skipped": "0 positives"},
                "false_to_true": {"skipped": "1 positives among 452 train rows (need 2 of each class)"},
            },
            "best": best,
            "best_control": {**best, "test_mcc": 0.01, "all_mcc": 0.02} if has_rule else no_rule,
            "hq": has_rule and mcc >= 0.7,
        })  # fmt: skip
    tests = [a["best"]["test_mcc"] for a in agonists if a["best"]["target"]]  # type: ignore[index]
    thresholds = ("0.70", "0.75", "0.80", "0.85", "0.90")
    write_json(run_dir / "neuron_rules.json", {
        "n_agonists": len(agonists), "n_eval": len(flips), "dropped_unreproduced": 0,
        "evaluation": "all prompts", "hq_threshold": 0.7, "min_coverage": 0.005, "agonists": agonists,
        "hq_counts": {"test": {t: sum(m >= float(t) for m in tests) for t in thresholds},
                      "all": {t: sum(m + 0.02 >= float(t) for m in tests) for t in thresholds}},
        "controls": {
            "fake_target": {"note": "permuted flip labels",
                            "hq_counts": {"test": dict.fromkeys(thresholds, 0),
                                          "all": dict.fromkeys(thresholds, 0)}},
            "random_neurons": {"note": "random non-agonist units", "units": ["L0.mlp[1]", "L1.mlp[2]"],
                               "hq_counts": {"test": dict.fromkeys(thresholds, 0),
                                             "all": {t: int(t == "0.70") for t in thresholds}},
                               "flip_rate_any_mean": 0.01},
        },
    })  # fmt: skip


def build_run_dir(run_dir: Path, *, stages: str = "all") -> Path:
    """Write a synthetic run directory; ``stages="measure"`` writes only the measure outputs."""
    from mecharule.rules import extract_behaviour_rules

    run_dir.mkdir(parents=True, exist_ok=True)
    behaviour = behaviour_table()
    features, defs = feature_table(behaviour)
    provenance = {
        "task": "arithmetic",
        "task_options": TASK_OPTIONS,
        "model": "zoo:arithmetic",
        "positive_label": "correct",
    }
    write_parquet(run_dir / "behaviour.parquet", behaviour, provenance)
    write_parquet(run_dir / "features.parquet", features, {"task": "arithmetic"})
    write_json(run_dir / "features.json", {"features": defs, "task": "arithmetic"})
    stage_names = (
        ["measure"]
        if stages == "measure"
        else ["measure", "rules", "localize", "validate", "recompose", "anchor"]
    )
    write_json(
        run_dir / "run.json",
        {
            "config": {"seed": 0, "measure": {"task": "arithmetic", "task_options": TASK_OPTIONS}},
            "seed": 0,
            "package_version": "0.1.0",
            "model": {"name": "zoo:arithmetic", "path": "/nonexistent/organisms/arithmetic"},
            "stages": {},
        },
    )
    if stages == "measure":
        return _record_stages(run_dir, stage_names)
    rules = extract_behaviour_rules(run_dir, seed=0, options={"n_estimators": 20, "max_depth": 3})
    rule_text = rules["disjuncts"][0]["readable"] if rules["disjuncts"] else "no rule"
    _localization(run_dir, rule_text)
    _recomposition(run_dir)
    _anchoring(run_dir, behaviour, ["L0.mlp[3]", "L1.mlp[5]", "L1.mlp[11]", "L0.mlp[7]"])
    write_json(
        run_dir / "summary.json",
        {
            "n_prompts": len(behaviour),
            "accuracy": float(behaviour["label"].mean()),
            "n_rules": 1,
            "n_agonists": 4,
            "interventions": 40,
            "recall": 1.0,
            "cost_ratio": 0.6,
            "wall_seconds": {"measure": 1.0, "rules": 2.0},
            "schema_version_of_inputs": SCHEMA_VERSION,
        },
    )
    return _record_stages(run_dir, stage_names)


STAGE_OUTPUTS = {
    "measure": ["behaviour.parquet", "features.parquet", "features.json"],
    "rules": ["rules.json"],
    "localize": ["localization/summary.json"],
    "validate": ["validation.json"],
    "recompose": ["recomposition.json"],
    "anchor": ["flips.parquet", "neuron_rules.json"],
}


def _record_stages(run_dir: Path, stage_names: list[str]) -> Path:
    """Record each stage as done with the digests of its files, as the pipeline does."""
    from mecharule.io.rundir import RunDir

    rundir = RunDir(run_dir)
    for i, stage in enumerate(stage_names):
        rundir.mark_stage_done(stage, f"{i:016x}", STAGE_OUTPUTS[stage], 1.0 + i)
    return run_dir
