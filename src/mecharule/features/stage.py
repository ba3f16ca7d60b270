"""Optional LLM-proposed features for the measure stage.

Contrastive rounds against an OpenAI-compatible endpoint (``MECHARULE_LLM_BASE_URL``,
``MECHARULE_LLM_MODEL``, ``MECHARULE_LLM_API_KEY``; answers cached in the run directory so a re-run
makes no call), every proposal executed in the sandbox, then filtered on TRAIN rows only (constant,
low predictive power, near-duplicate) so the held-out rows stay held out.

The log returned beside the features (``features.json["proposal"]``) records EVERY proposal with
its fate — kept, or rejected as a duplicate, by the AST check, in the sandbox or by a filter — and
the reason, plus the sandbox protections active on this system (:func:`proposal_log`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mecharule.errors import SandboxError
from mecharule.features.base import Feature
from mecharule.features.filters import DroppedFeature, filter_features
from mecharule.features.proposal import DEFAULT_SYSTEM_PROMPT, SkippedProposal, propose_features
from mecharule.features.sandbox import (
    ProposedFeature,
    Rejection,
    SandboxLimits,
    probe_sandbox,
    score_proposed_features,
)
from mecharule.tasks.base import Task

KEPT_REASON = "kept: passed the AST check, the sandbox and the train-row filters"


def proposed_features(
    task: Task,
    prompts: pd.DataFrame,
    labels: np.ndarray,
    is_train: np.ndarray,
    seed_features: Sequence[Feature],
    *,
    cache_dir: Path,
    n_rounds: int,
    n_features: int,
    n_examples: int,
    seed: int,
    client: Any = None,
    limits: SandboxLimits | None = None,
) -> tuple[list[Feature], pd.DataFrame, dict[str, Any]]:
    """Accepted proposed features, their value table, and a log of every proposal's fate.

    ``limits`` bounds each sandboxed feature and each round (default :class:`SandboxLimits`: 20 s
    per feature, 120 s per round).
    """
    from mecharule.llm.client import ChatClient

    client = client or ChatClient.from_env(cache_dir=cache_dir)
    limits = limits or SandboxLimits()
    train = prompts[is_train].reset_index(drop=True)
    skipped: list[SkippedProposal] = []
    proposals = propose_features(
        client,
        train,
        labels[is_train],
        system_prompt=getattr(task, "feature_system_prompt", DEFAULT_SYSTEM_PROMPT),
        positive_label=task.positive_label,
        info_keys=list(task.metadata_columns),
        existing=[(f.name, f.description) for f in seed_features],
        n_rounds=n_rounds,
        n_features=n_features,
        n_examples=n_examples,
        seed=seed,
        on_skip=skipped.append,
    )
    accepted, rejected = score_proposed_features(
        proposals,
        prompts,
        list(task.metadata_columns),
        limits=limits,
        taken_names={f.name for f in seed_features},
    )
    values = pd.DataFrame({f.name: f.compute(prompts) for f in accepted}, index=prompts.index)
    kept = filter_features(values[is_train], labels[is_train]) if len(accepted) else None
    keep_names = set(kept.table.columns) if kept is not None else set()
    final = [f for f in accepted if f.name in keep_names]
    outcomes = ProposalOutcomes(proposals, skipped, accepted, rejected, kept.dropped if kept else (), final)
    return final, values[[f.name for f in final]], proposal_log(outcomes, limits)


@dataclass(frozen=True)
class ProposalOutcomes:
    """Everything that happened to one stage's proposals, for :func:`proposal_log`.

    ``rejected`` is in proposal order, one per proposal the sandbox did not accept; ``dropped``
    are the filters' drops among the accepted; ``kept`` the features that survived them.
    """

    proposals: Sequence[ProposedFeature]
    skipped: Sequence[SkippedProposal]
    accepted: Sequence[Feature]
    rejected: Sequence[Rejection]
    dropped: Sequence[DroppedFeature]
    kept: Sequence[Feature]


def proposal_log(outcomes: ProposalOutcomes, limits: SandboxLimits) -> dict[str, Any]:
    """``features.json["proposal"]``: every proposal with its status, stage and reason.

    Keys: ``n_proposed`` (proposals that reached the sandbox), ``n_answered`` (every labelled
    item in the answers), ``rejected`` (label, stage, reason, round; before the filters),
    ``filtered`` (name, filter, reason), ``kept`` (names), ``proposals`` (one record per labelled
    item, in round order), ``parse_problems`` (answer parts with no usable item),
    ``round_seconds`` and ``sandbox`` (which process protections hold here).
    """
    records = _records(outcomes)
    return {
        "n_proposed": len(outcomes.proposals),
        "n_answered": len(records),
        "rejected": [
            {k: r[k] for k in ("label", "stage", "reason", "round")}
            for r in records
            if r["status"] == "rejected" and r["stage"] != "filter"
        ],
        "filtered": [{"name": d.name, "filter": d.filter, "reason": d.reason} for d in outcomes.dropped],
        "kept": [f.name for f in outcomes.kept],
        "proposals": records,
        "parse_problems": [
            {"round": s.round, "reason": s.reason} for s in outcomes.skipped if s.label is None
        ],
        "round_seconds": limits.round_seconds,
        "sandbox": _sandbox_protections(limits),
    }


def _records(outcomes: ProposalOutcomes) -> list[dict[str, Any]]:
    """One record per labelled item: sandboxed proposals (in order), then the skipped, by round."""
    by_proposal = {id(getattr(f.compute, "proposal", None)): f for f in outcomes.accepted}
    kept = {f.name for f in outcomes.kept}
    dropped = {d.name: d.reason for d in outcomes.dropped}
    rejections = iter(outcomes.rejected)
    records = []
    for proposal in outcomes.proposals:
        feature = by_proposal.get(id(proposal))
        stage: str | None
        if feature is None:
            rejection = next(rejections)
            status, stage, reason, name = "rejected", rejection.stage, rejection.reason, None
        elif feature.name in kept:
            status, stage, reason, name = "kept", None, KEPT_REASON, feature.name
        else:
            status, stage, name = "rejected", "filter", feature.name
            reason = dropped.get(feature.name, "dropped by the filters")
        records.append(
            _record(proposal.round, proposal.label, status, stage, reason, name, proposal.python_src)
        )
    records += [
        _record(skip.round, skip.label, "rejected", skip.stage, skip.reason, None, skip.python_src)
        for skip in outcomes.skipped
        if skip.label is not None
    ]
    return sorted(records, key=lambda r: r["round"])


def _record(
    round_index: int, label: str, status: str, stage: str | None, reason: str, name: str | None, source: str
) -> dict[str, Any]:
    return {"round": round_index, "label": label, "status": status, "stage": stage, "reason": reason,
            "name": name, "python_src": source}  # fmt: skip


def _sandbox_protections(limits: SandboxLimits) -> dict[str, Any]:
    try:
        return probe_sandbox(limits).to_json()
    except SandboxError as exc:
        return {"error": str(exc)}


def proposal_source(feature: Feature) -> dict[str, Any]:
    """The definition of a proposed feature, with its source, for features.json."""
    proposal = getattr(feature.compute, "proposal", None)
    extra = {"python_src": proposal.python_src, "round": proposal.round} if proposal is not None else {}
    return {**feature.definition(), **extra}
