"""Attribution patching (AtP): a first-order estimate of every unit's ablation effect at once.

For prompt ``p`` with its baseline answer ``y_p`` (teacher-forced, followed by EOS), metric
``M_p = Σ_t log P(y_p,t | prompt, y_p,<t)``. For unit ``u`` (one coordinate of a site) with activation
``a_p,u(t)`` and ablation value ``v_u(t)`` (e.g. the position-aligned mean) at position ``t``::

    score_u = (1/N) Σ_p Σ_{t ∈ ablated positions} (v_u(t) − a_p,u(t)) · ∂M_p/∂a_p,u(t)

which is the first-order Taylor estimate of ``M_p(ablate u) − M_p(clean)``, averaged over prompts.
Ablated positions follow :func:`mecharule.interventions.values.position_gate` (``decode`` = last
prompt token + answer positions, as in the ablation engine).

Sign convention: a NEGATIVE score means ablating the unit is predicted to LOWER the log-prob of the
baseline answer, i.e. the unit supports the current answer and its ablation is likely to flip it.
Positive = ablation predicted to raise it.

Cost: one forward + one backward per batch of prompts, for every unit of every layer together
(versus one ablated forward per unit for brute force). The gradient is taken at the same site as
the activation difference (the reference took it at the MLP input while the difference was at the
MLP output, REFERENCE-METHOD §13.1.5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mecharule.attribution.gradients import (
    TeacherForcedBlock,
    activations_and_gradients,
    teacher_forced_block,
)
from mecharule.attribution.method import ATTRIBUTORS, tables_method
from mecharule.errors import ConfigError, DataError
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.values import PositionMode, ValueTable, position_gate
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import UnitKind, check_unit_kind


def atp_scores(
    handle: ModelHandle,
    prompts: Sequence[str],
    answers: Sequence[str],
    tables: Mapping[SiteKey, ValueTable],
    kind: UnitKind,
    positions: PositionMode = "decode",
    batch_size: int = 64,
) -> torch.Tensor:
    """Signed AtP scores ``# [n_layers, width]`` (see the module docstring for formula and sign)."""
    kind = check_unit_kind(kind)
    keys = _site_keys(handle, kind, tables)
    _check_inputs(prompts, answers, batch_size)
    total = torch.zeros(handle.arch.n_layers, handle.arch.width(kind), dtype=torch.float64)
    for start in range(0, len(prompts), batch_size):
        block = teacher_forced_block(
            handle, prompts[start : start + batch_size], answers[start : start + batch_size]
        )
        acts, grads, _ = activations_and_gradients(handle, block, keys)
        total += block_sums(block, acts, grads, tables, keys, positions)
    return (total / len(prompts)).float()


def block_sums(
    block: TeacherForcedBlock,
    acts: Mapping[SiteKey, torch.Tensor],
    grads: Mapping[SiteKey, torch.Tensor],
    tables: Mapping[SiteKey, ValueTable],
    keys: Sequence[SiteKey],
    positions: PositionMode,
) -> torch.Tensor:
    """``# [n_layers, width]`` float64: Σ over the block's rows and gated positions of delta · gradient."""
    gate = position_gate(block.rel, positions)[..., None]  # [batch, pos, 1]
    rows = []
    for key in keys:
        delta = tables[key].lookup(block.rel).to(acts[key].dtype) - acts[key]  # [batch, pos, width]
        rows.append((delta * grads[key] * gate).sum((0, 1)).double().cpu())
    return torch.stack(rows)


def _site_keys(handle: ModelHandle, kind: UnitKind, tables: Mapping[SiteKey, ValueTable]) -> list[SiteKey]:
    keys: list[SiteKey] = [(layer, kind) for layer in range(handle.arch.n_layers)]
    missing = [key for key in keys if key not in tables]
    if missing:
        raise DataError(
            f"no ablation values for sites {missing}; build tables for every layer of kind {kind!r} "
            "(mecharule.interventions.values.mean_tables(handle, keys, ...))"
        )
    return keys


def _check_inputs(prompts: Sequence[str], answers: Sequence[str], batch_size: int) -> None:
    if not prompts:
        raise DataError("no prompts to attribute; the prompt list is empty")
    if len(prompts) != len(answers):
        raise DataError(f"{len(prompts)} prompts but {len(answers)} answers; pass one answer per prompt")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: must be at least 1")


ATTRIBUTORS.register("atp")(tables_method("atp", atp_scores))
