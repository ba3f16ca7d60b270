"""The forward + backward shared by the attribution methods: unit activations and the gradient of the
answer log-prob metric with respect to them, at the same site.

Metric: the sum, over prompts and answer positions, of ``log p(answer token)`` teacher-forced on the
given answer followed by EOS (the EOS target is part of the metric). Unlike a KL divergence to the
clean distribution, its gradient at the clean point is not zero.

The graph is rooted at the input embeddings (a leaf that requires grad), so gradients exist even
when the model's parameters are frozen; only the activations' gradients are computed
(``torch.autograd.grad``), never the parameters'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mecharule.interventions.hooks import SiteKey, recording
from mecharule.interventions.values import teacher_forced_batch
from mecharule.models.loading import ModelHandle


@dataclass(frozen=True)
class TeacherForcedBlock:
    """A left-padded prompt + answer + EOS batch ``# [batch, pos]``; ``rel`` as in
    :func:`mecharule.interventions.values.teacher_forced_batch` (-1 = last prompt token)."""

    ids: torch.Tensor
    mask: torch.Tensor
    rel: torch.Tensor

    @property
    def position_ids(self) -> torch.Tensor:
        return (self.mask.cumsum(1) - 1).clamp(min=0)


def teacher_forced_block(
    handle: ModelHandle, prompts: Sequence[str], answers: Sequence[str]
) -> TeacherForcedBlock:
    ids, mask, rel = teacher_forced_batch(handle, prompts, answers)
    return TeacherForcedBlock(ids, mask, rel)


def input_embeddings(handle: ModelHandle, ids: torch.Tensor) -> torch.Tensor:
    """``# [batch, pos, d_model]`` input embeddings of the token ids (no gradient)."""
    with torch.no_grad():
        model: Any = handle.model  # a PreTrainedModel; nn.Module's typing hides get_input_embeddings
        embed: torch.Tensor = model.get_input_embeddings()(ids)
    return embed


def answer_logprob(logits: torch.Tensor, block: TeacherForcedBlock) -> torch.Tensor:
    """Sum over rows and answer targets (answer tokens + EOS) of the target token's log-prob.

    ``logits[:, c]`` predicts the token at column ``c + 1``; a target is a column with ``rel >= 0``.
    """
    wide = torch.promote_types(logits.dtype, torch.float32)  # half → float32; float64 stays
    logp = torch.log_softmax(logits[:, :-1].to(wide), dim=-1)  # [batch, pos-1, vocab]
    targets = block.ids[:, 1:]  # [batch, pos-1]
    is_target = block.rel[:, 1:] >= 0  # padding holds PAD_REL < 0
    picked = logp.gather(-1, targets[..., None])[..., 0]  # [batch, pos-1]
    return (picked * is_target).sum()


def activations_and_gradients(
    handle: ModelHandle,
    block: TeacherForcedBlock,
    keys: Sequence[SiteKey],
    embeds: torch.Tensor | None = None,
) -> tuple[dict[SiteKey, torch.Tensor], dict[SiteKey, torch.Tensor], float]:
    """One forward + backward: per site ``# [batch, pos, width]`` activations and d(metric)/d(activation).

    ``embeds`` replaces the input embeddings of ``block.ids`` (EAP-IG's interpolated inputs).
    Returns detached activations, gradients and the metric value.
    """
    root = input_embeddings(handle, block.ids) if embeds is None else embeds.detach()
    root = root.clone().requires_grad_(True)
    with torch.enable_grad(), recording(handle, list(keys), detach=False) as store:
        out = handle.model(inputs_embeds=root, attention_mask=block.mask, position_ids=block.position_ids)
        metric = answer_logprob(out.logits, block)
        acts = [store[key][0] for key in keys]
        grads = torch.autograd.grad(metric, acts, allow_unused=True)
    act_map = {key: a.detach() for key, a in zip(keys, acts, strict=True)}
    grad_map = {
        key: torch.zeros_like(a) if g is None else g.detach()
        for key, a, g in zip(keys, act_map.values(), grads, strict=True)
    }
    return act_map, grad_map, float(metric.detach())
