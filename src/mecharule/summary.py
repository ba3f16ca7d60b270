"""``summary.json``: the headline numbers of a run, gathered from its artifacts."""

from __future__ import annotations

from typing import Any

from mecharule.config import saved_section
from mecharule.io.rundir import RunDir, read_json, read_parquet


def _maybe(rundir: RunDir, name: str) -> dict[str, Any] | None:
    return read_json(rundir.file(name)) if rundir.trusted(name) else None


def build_summary(rundir: RunDir) -> dict[str, Any]:
    behaviour = read_parquet(rundir.file("behaviour.parquet"), columns={"label": "b"})
    manifest = rundir.manifest()
    summary: dict[str, Any] = {
        "model": manifest.get("model", {}).get("name"),
        "task": saved_section(manifest.get("config") or {}, "task").get("name"),
        "n_prompts": len(behaviour),
        "accuracy": round(float(behaviour["label"].mean()), 4),
    }
    rules = _maybe(rundir, "rules.json")
    if rules is not None:
        summary["n_rules"] = len(rules.get("disjuncts", []))
        summary["rules_test_mcc"] = rules.get("metrics", {}).get("test", {}).get("mcc")
        summary["rules_control_test_mcc"] = (
            ((rules.get("control") or {}).get("metrics") or {}).get("test", {}).get("mcc")
        )
    loc = _maybe(rundir, "localization/summary.json")
    if loc is not None:
        summary["n_agonists"] = loc["n_agonists"]
        summary["interventions"] = loc["group_evaluations"]
    val = _maybe(rundir, "validation.json")
    if val is not None:
        summary["recall_all_units"] = val["recall_all_units"]
        summary["shortlist_recall"] = val["shortlist_recall"]
        summary["recall_in_shortlist"] = val["recall_in_shortlist"]["recall"]
        summary["recall_scope"] = (
            "recall_all_units: CHA's agonists over every unit of the searched layers (sampled outside "
            "the shortlist when large), by observed effect bin; shortlist_recall: the candidates' share "
            "of them; recall_in_shortlist: over the candidates only"
        )
        summary["cost_ratio"] = val["cost"]["cost_ratio"]
        summary["cost_ratio_max"] = val["cost_ratio_max"]
        summary["wall_time_ratio"] = val["wall_seconds"]["ratio"]
    anchored = _maybe(rundir, "neuron_rules.json")
    if anchored is not None:
        summary["n_anchored"] = anchored["n_agonists"]
        summary["hq_neurons_test_0.70"] = anchored["hq_counts"]["test"]["0.70"]
        summary["hq_neurons_fake_target_0.70"] = anchored["controls"]["fake_target"]["hq_counts"]["test"][
            "0.70"
        ]
        summary["hq_neurons_random_units_0.70"] = anchored["controls"]["random_neurons"]["hq_counts"]["test"][
            "0.70"
        ]
    recomposed = _maybe(rundir, "recomposition.json")
    if recomposed is not None:
        from mecharule.recomposition.text import kind_counts

        summary["recomposition"] = kind_counts(recomposed["problems"])
        summary["shared_agonists"] = len(recomposed.get("shared_agonists") or [])
    stages = manifest.get("stages", {})
    # the report's own record is left out: rewriting summary.json after the report then changes
    # nothing, so the report stays recorded with this very file
    summary["wall_seconds"] = {k: v.get("wall_seconds") for k, v in stages.items() if k != "report"}
    return summary
