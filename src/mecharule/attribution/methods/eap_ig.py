"""EAP-IG-inputs at unit level: integrated gradients along a path of interpolated input embeddings.

Each clean prompt ``c`` is paired with a corrupted prompt ``r`` of the SAME token length; both are
teacher-forced on the clean answer ``y_c`` followed by EOS, so the two sequences differ only in their
prompt tokens. With input embeddings ``e_c``, ``e_r`` and ``m`` steps::

    α_k = (k − 0.5) / m,   e(α_k) = e_r + α_k (e_c − e_r),          k = 1..m   (midpoint rule)
    g_u(t) = (1/m) Σ_k ∂M/∂a_u(t) evaluated at input e(α_k)
    score_u = (1/N) Σ_pairs Σ_{t ∈ ablated positions} (a_u^r(t) − a_u^c(t)) · g_u(t)

``M`` is the log-prob of the clean answer tokens (+EOS), as in :mod:`mecharule.attribution.atp`.
The gradient is taken at the SAME site as the difference ``a^r − a^c`` (unit ``mlp``: the input of
the down-projection; unit ``mlp_out``: the MLP output), never at the MLP input while Δ is at its
output. The midpoint rule never evaluates α = 1 alone, and with a log-prob metric the clean point has
a non-zero gradient anyway (the reference's KL metric made plain EAP identically zero).

Sign convention: ``score_u ≈ M(unit u takes its corrupted value) − M(clean)``. NEGATIVE = patching the
corrupted activation into u is predicted to LOWER the clean answer's log-prob (u carries what the
covered prompts need); positive = predicted to raise it.

Cost: per batch, 2 forwards without gradient (clean and corrupted activations) + ``m`` forward +
backward passes; every unit of every layer is scored together. With m = 1, EAP-IG is the
gradient at the embedding midpoint times the activation difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mecharule.attribution.gradients import (
    TeacherForcedBlock,
    activations_and_gradients,
    input_embeddings,
    teacher_forced_block,
)
from mecharule.attribution.method import ATTRIBUTORS, AttributionMethod, AttributionRequest
from mecharule.errors import ConfigError, DataError
from mecharule.interventions.hooks import SiteKey, recording
from mecharule.interventions.values import PositionMode, position_gate
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import UnitKind, check_unit_kind


def eap_ig_scores(
    handle: ModelHandle,
    clean_prompts: Sequence[str],
    corrupted_prompts: Sequence[str],
    answers: Sequence[str],
    kind: UnitKind,
    steps: int = 8,
    positions: PositionMode = "decode",
    batch_size: int = 64,
) -> torch.Tensor:
    """Signed EAP-IG scores ``# [n_layers, width]`` (see the module docstring for formula and sign).

    ``answers`` are the clean prompts' baseline answers; corrupted prompts are teacher-forced on them.
    """
    kind = check_unit_kind(kind)
    _check_pairs(handle, clean_prompts, corrupted_prompts, answers, steps, batch_size)
    keys: list[SiteKey] = [(layer, kind) for layer in range(handle.arch.n_layers)]
    total = torch.zeros(handle.arch.n_layers, handle.arch.width(kind), dtype=torch.float64)
    for start in range(0, len(clean_prompts), batch_size):
        stop = start + batch_size
        clean = teacher_forced_block(handle, clean_prompts[start:stop], answers[start:stop])
        corrupt = teacher_forced_block(handle, corrupted_prompts[start:stop], answers[start:stop])
        total += _batch_scores(handle, clean, corrupt, keys, steps, positions)
    return (total / len(clean_prompts)).float()


def _batch_scores(
    handle: ModelHandle,
    clean: TeacherForcedBlock,
    corrupt: TeacherForcedBlock,
    keys: list[SiteKey],
    steps: int,
    positions: PositionMode,
) -> torch.Tensor:
    """Summed (over the batch) scores ``# [n_layers, width]`` in float64."""
    e_clean = input_embeddings(handle, clean.ids)  # [batch, pos, d_model]
    e_corrupt = input_embeddings(handle, corrupt.ids)
    a_clean = _activations(handle, clean, keys)
    a_corrupt = _activations(handle, corrupt, keys)
    delta = {key: a_corrupt[key] - a_clean[key] for key in keys}  # [batch, pos, width] each
    grad_sum = {key: torch.zeros_like(d) for key, d in delta.items()}
    for k in range(1, steps + 1):
        alpha = (k - 0.5) / steps
        embeds = e_corrupt + alpha * (e_clean - e_corrupt)
        _, grads, _ = activations_and_gradients(handle, clean, keys, embeds=embeds)
        for key in keys:
            grad_sum[key] += grads[key]
    gate = position_gate(clean.rel, positions)[..., None]  # [batch, pos, 1]
    rows = [(delta[key] * grad_sum[key] / steps * gate).sum((0, 1)).double().cpu() for key in keys]
    return torch.stack(rows)


@torch.no_grad()
def _activations(
    handle: ModelHandle, block: TeacherForcedBlock, keys: list[SiteKey]
) -> dict[SiteKey, torch.Tensor]:
    with recording(handle, keys) as store:
        handle.model(input_ids=block.ids, attention_mask=block.mask, position_ids=block.position_ids)
    return {key: store[key][0] for key in keys}


def _check_pairs(
    handle: ModelHandle,
    clean: Sequence[str],
    corrupted: Sequence[str],
    answers: Sequence[str],
    steps: int,
    batch_size: int,
) -> None:
    if not clean:
        raise DataError("no prompt pairs to attribute; the clean prompt list is empty")
    if not len(clean) == len(corrupted) == len(answers):
        raise DataError(
            f"{len(clean)} clean prompts, {len(corrupted)} corrupted prompts and {len(answers)} answers; "
            "pass one corrupted prompt and one answer per clean prompt"
        )
    if steps < 1:
        raise ConfigError(f"steps={steps}: the number of integration steps must be at least 1")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: must be at least 1")
    tok = handle.tokenizer
    for i, (c, r) in enumerate(zip(clean, corrupted, strict=True)):
        n_c, n_r = len(tok(c)["input_ids"]), len(tok(r)["input_ids"])
        if n_c != n_r:
            raise DataError(
                f"pair {i}: clean prompt {c!r} has {n_c} tokens but corrupted prompt {r!r} has {n_r}; "
                "EAP-IG interpolates embeddings position by position, so pairs must have equal token "
                "length (use mecharule.sampling.length_matched_pairs and keep the length-matched pairs)"
            )


def _from_request(handle: ModelHandle, request: AttributionRequest) -> torch.Tensor:
    if request.corrupted_prompts is None:
        raise ConfigError(
            "attribution method 'eap_ig' needs corrupted prompts paired with the clean ones "
            "(request.corrupted_prompts); none were given"
        )
    return eap_ig_scores(
        handle, request.prompts, request.corrupted_prompts, request.answers, request.kind,
        request.ig_steps, request.positions, request.batch_size,
    )  # fmt: skip


ATTRIBUTORS.register("eap_ig")(AttributionMethod(_from_request, inputs="pairs"))
