"""Attribution: cheap per-unit estimates of ablation effects, used to pick search candidates.

Methods (one file each in :mod:`.methods`, formula and cost in each docstring), registered in
:data:`ATTRIBUTORS` with a common call ``method(handle, request) -> Tensor[n_layers, width]``:

* ``atp`` — attribution patching toward the ablation values (:func:`atp_scores`);
* ``eap_ig`` — EAP-IG-inputs on clean/corrupted prompt pairs (:func:`eap_ig_scores`);
* ``atp_gd`` — AtP with AtP*'s GradDrop correction for cancelling paths (:func:`atp_graddrop_scores`).

Scores are signed (negative = the intervention is predicted to lower the answer's log-prob);
:func:`select_candidates` ranks by magnitude.
"""

from __future__ import annotations

import numpy as np
import torch

from mecharule.attribution.method import ATTRIBUTORS, AttributionMethod, AttributionRequest
from mecharule.attribution.methods.atp import atp_scores
from mecharule.attribution.methods.atp_graddrop import atp_graddrop_scores
from mecharule.attribution.methods.eap_ig import eap_ig_scores
from mecharule.errors import ConfigError
from mecharule.models.sites import Site, UnitKind, check_unit_kind
from mecharule.shortlist import TopM, candidate_count


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
    "AttributionMethod",
    "AttributionRequest",
    "TopM",
    "atp_graddrop_scores",
    "atp_scores",
    "candidate_count",
    "eap_ig_scores",
    "select_candidates",
]
