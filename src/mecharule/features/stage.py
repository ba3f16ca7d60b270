"""Optional LLM-proposed features for the measure stage.

Contrastive rounds against an OpenAI-compatible endpoint (``MECHARULE_LLM_BASE_URL``,
``MECHARULE_LLM_MODEL``, ``MECHARULE_LLM_API_KEY``; answers cached in the run directory so a re-run
makes no call), every proposal executed in the sandbox, then filtered on TRAIN rows only (constant,
low predictive power, near-duplicate) so the held-out rows stay held out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mecharule.features.base import Feature
from mecharule.features.filters import filter_features
from mecharule.features.proposal import DEFAULT_SYSTEM_PROMPT, propose_features
from mecharule.features.sandbox import score_proposed_features
from mecharule.tasks.base import Task


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
) -> tuple[list[Feature], pd.DataFrame, dict[str, Any]]:
    """Accepted proposed features, their value table, and a log (rejections, filter drops)."""
    from mecharule.llm.client import ChatClient

    client = client or ChatClient.from_env(cache_dir=cache_dir)
    train = prompts[is_train].reset_index(drop=True)
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
    )
    accepted, rejected = score_proposed_features(
        proposals, prompts, list(task.metadata_columns), taken_names={f.name for f in seed_features}
    )
    values = pd.DataFrame({f.name: f.compute(prompts) for f in accepted}, index=prompts.index)
    kept = filter_features(values[is_train], labels[is_train]) if len(accepted) else None
    keep_names = set(kept.table.columns) if kept is not None else set()
    final = [f for f in accepted if f.name in keep_names]
    log = {
        "n_proposed": len(proposals),
        "rejected": [{"label": r.label, "stage": r.stage, "reason": r.reason} for r in rejected],
        "filtered": [
            {"name": d.name, "filter": d.filter, "reason": d.reason} for d in (kept.dropped if kept else ())
        ],
        "kept": [f.name for f in final],
    }
    return final, values[[f.name for f in final]], log


def proposal_source(feature: Feature) -> dict[str, Any]:
    """The definition of a proposed feature, with its source, for features.json."""
    proposal = getattr(feature.compute, "proposal", None)
    extra = {"python_src": proposal.python_src, "round": proposal.round} if proposal is not None else {}
    return {**feature.definition(), **extra}
