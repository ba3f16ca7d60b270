"""Attribution: cheap per-unit estimates of ablation effects, used to pick search candidates.

Methods (one per file, formula and cost in each docstring), registered in :data:`ATTRIBUTORS` under a
common call ``attributor(handle, request) -> Tensor[n_layers, width]``:

* ``atp`` — attribution patching toward the ablation values (:func:`atp_scores`);
* ``eap_ig`` — EAP-IG-inputs on clean/corrupted prompt pairs (:func:`eap_ig_scores`);
* ``atp_gd`` — AtP with AtP*'s GradDrop correction for cancelling paths (:func:`atp_graddrop_scores`).

Scores are signed (negative = the intervention is predicted to lower the answer's log-prob);
:func:`select_candidates` ranks by magnitude.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mecharule.attribution.atp import atp_scores
from mecharule.attribution.atp_graddrop import atp_graddrop_scores
from mecharule.attribution.eap_ig import eap_ig_scores
from mecharule.errors import ConfigError
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.values import PositionMode, ValueTable
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import Site, UnitKind, check_unit_kind
from mecharule.registry import Registry
from mecharule.shortlist import TopM, candidate_count


@dataclass(frozen=True)
class AttributionRequest:
    """What any attributor may need. ``corrupted_prompts`` (EAP-IG) pair 1:1 with ``prompts``;
    ``tables`` (AtP) hold the ablation values of every layer of ``kind``."""

    prompts: Sequence[str]
    answers: Sequence[str]
    kind: UnitKind
    positions: PositionMode = "decode"
    tables: Mapping[SiteKey, ValueTable] | None = None
    corrupted_prompts: Sequence[str] | None = None
    ig_steps: int = 8
    batch_size: int = 64


Attributor = Callable[[ModelHandle, AttributionRequest], torch.Tensor]
ATTRIBUTORS: Registry[Attributor] = Registry("attributor")


def _patching_attributor(name: str, scores: Callable[..., torch.Tensor]) -> Attributor:
    """An attributor over the ablation value tables (AtP and its GradDrop variant)."""

    def attribute(handle: ModelHandle, request: AttributionRequest) -> torch.Tensor:
        if request.tables is None:
            raise ConfigError(
                f"attributor {name!r} needs ablation value tables (request.tables); none were given"
            )
        return scores(
            handle,
            request.prompts,
            request.answers,
            request.tables,
            request.kind,
            request.positions,
            request.batch_size,
        )

    return attribute


ATTRIBUTORS.register("atp")(_patching_attributor("atp", atp_scores))
ATTRIBUTORS.register("atp_gd")(_patching_attributor("atp_gd", atp_graddrop_scores))


@ATTRIBUTORS.register("eap_ig")
def _attribute_eap_ig(handle: ModelHandle, request: AttributionRequest) -> torch.Tensor:
    if request.corrupted_prompts is None:
        raise ConfigError(
            "attributor 'eap_ig' needs corrupted prompts paired with the clean ones "
            "(request.corrupted_prompts); none were given"
        )
    return eap_ig_scores(
        handle,
        request.prompts,
        request.corrupted_prompts,
        request.answers,
        request.kind,
        request.ig_steps,
        request.positions,
        request.batch_size,
    )


def select_candidates(
    scores: torch.Tensor, kind: UnitKind, top_m: TopM, include_zeros: bool = False
) -> list[Site]:
    """The top-M units by |score|, largest first.

    ``top_m`` is a count (an int ``>= 1``) or a percentage of all units (``"50%"``, rounded up).
    ``"100%"`` is every unit, zeros included; otherwise exact zeros are excluded unless
    ``include_zeros``. Ties keep (layer, index) order.
    """
    kind = check_unit_kind(kind)
    values = scores.detach().double().cpu().numpy()
    if values.ndim != 2:
        raise ConfigError(f"scores must be [n_layers, width]; got shape {tuple(values.shape)}")
    if np.isnan(values).any():
        raise ConfigError("scores contain NaN; recompute the attribution (a NaN cannot be ranked)")
    count = candidate_count(top_m, values.size)
    flat = np.abs(values).ravel()
    order = np.argsort(-flat, kind="stable")  # row-major: ties by layer, then index
    if not (include_zeros or (count == values.size and isinstance(top_m, str))):
        order = order[flat[order] > 0]
    width = values.shape[1]
    return [Site(int(i) // width, kind, int(i) % width) for i in order[:count]]


__all__ = [
    "ATTRIBUTORS",
    "AttributionRequest",
    "Attributor",
    "TopM",
    "atp_graddrop_scores",
    "atp_scores",
    "candidate_count",
    "eap_ig_scores",
    "select_candidates",
]
