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
from typing import Any

import numpy as np
import pandas as pd

from mecharule.config import FeatureProposalConfig
from mecharule.errors import SandboxError
from mecharule.features.base import Feature
from mecharule.features.filters import DroppedFeature, filter_features
from mecharule.features.proposal import (
    DEFAULT_SYSTEM_PROMPT,
    LabelledPrompts,
    ProposalBrief,
    ProposalSettings,
    SkippedProposal,
    propose_features,
)
from mecharule.features.sandbox import (
    FeatureColumns,
    ProposedFeature,
    Rejection,
    SandboxLimits,
    probe_sandbox,
    score_proposed_features,
)
from mecharule.llm.client import ChatCompleter
from mecharule.tasks.base import Task

KEPT_REASON = "kept: passed the AST check, the sandbox and the train-row filters"


@dataclass(frozen=True)
class ProposalInputs:
    """What the measure stage hands to the proposal: its prompt table, each row's behaviour label,
    the train-row mask (proposals and filters see train rows only, so test rows stay held out), and
    the seed features already defined (shown to the LLM; their names are never reused)."""

    prompts: pd.DataFrame
    labels: np.ndarray
    is_train: np.ndarray
    seed_features: Sequence[Feature]


def proposed_features(
    task: Task,
    inputs: ProposalInputs,
    config: FeatureProposalConfig,
    *,
    client: ChatCompleter,
    seed: int,
) -> tuple[list[Feature], pd.DataFrame, dict[str, Any]]:
    """Accepted proposed features, their value table, and a log of every proposal's fate.

    ``config`` gives the rounds, features per round and examples per group, and bounds each
    sandboxed feature (``feature_seconds``) and each round (``round_seconds``). ``client``
    answers the proposal requests (``ChatClient.from_env(cache_dir=...)`` in a run); ``seed``
    draws the examples.
    """
    prompts, labels, is_train = inputs.prompts, inputs.labels, inputs.is_train
    seed_features = inputs.seed_features
    limits = SandboxLimits(wall_seconds=config.feature_seconds, round_seconds=config.round_seconds)
    train = prompts[is_train].reset_index(drop=True)
    skipped: list[SkippedProposal] = []
    proposals = propose_features(
        client,
        LabelledPrompts(train, labels[is_train]),
        brief=ProposalBrief(
            system_prompt=getattr(task, "feature_system_prompt", DEFAULT_SYSTEM_PROMPT),
            positive_label=task.positive_label,
            info_keys=list(task.metadata_columns),
            existing=[(f.name, f.description) for f in seed_features],
        ),
        settings=ProposalSettings(
            n_rounds=config.rounds, n_features=config.n_features, n_examples=config.n_examples, seed=seed
        ),
        on_skip=skipped.append,
    )
    accepted, rejected = score_proposed_features(
        proposals,
        prompts,
        FeatureColumns(info_columns=list(task.metadata_columns), taken_names={f.name for f in seed_features}),
        limits=limits,
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
        records.append(_record(proposal, status, stage, reason, name))
    records += [
        _record(skip, "rejected", skip.stage, skip.reason, None)
        for skip in outcomes.skipped
        if skip.label is not None
    ]
    return sorted(records, key=lambda r: r["round"])


def _record(
    item: ProposedFeature | SkippedProposal, status: str, stage: str | None, reason: str, name: str | None
) -> dict[str, Any]:
    """One entry of ``proposals`` in the log: the item's round, label and source, and its fate."""
    return {"round": item.round, "label": item.label, "status": status, "stage": stage, "reason": reason,
            "name": name, "python_src": item.python_src}  # fmt: skip


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
