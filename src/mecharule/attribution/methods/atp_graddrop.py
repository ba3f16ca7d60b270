"""AtP with GradDrop (AtP*, Kramár et al. 2024, §3.2): AtP corrected for cancelling paths.

Plain AtP (:mod:`.atp`) multiplies a unit's ablation delta by the gradient of the answer metric.
When the unit's effect reaches the output along several paths whose first-order contributions
cancel (say, directly and through a later layer that undoes it), that gradient is near zero and AtP
ranks a strong unit low. GradDrop re-runs the backward pass once per decoder block ``l`` with the
gradient through that block's contribution to the residual stream stopped (its output becomes
``x + stop_grad(block(x) − x)``), so that each run removes one path; a cancellation that needs
block ``l`` disappears in run ``l``. For a unit in layer ``k``::

    |score_u| = 1/(L − 1) · Σ_{l ≠ k} | AtP_u with block l's gradient dropped |

(for ``l < k`` the run equals plain AtP, since no gradient to the unit passes through block l).
The sign is plain AtP's, so the root's sign split still works. With one layer it is plain AtP.

Cost: L + 1 forward + backward passes per batch of prompts (plain AtP: 1). On a 2-layer organism
that is 3×; on a 30-layer model 31×, which is why it is not the default there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from mecharule.attribution.gradients import activations_and_gradients, teacher_forced_block
from mecharule.attribution.method import ATTRIBUTORS, tables_method
from mecharule.attribution.methods.atp import _check_inputs, _site_keys, block_sums
from mecharule.interventions.hooks import SiteKey
from mecharule.interventions.values import PositionMode, ValueTable
from mecharule.models.architectures import decoder_layers
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import UnitKind, check_unit_kind


@contextmanager
def gradient_dropped(handle: ModelHandle, layer: int) -> Iterator[None]:
    """Inside, decoder block ``layer`` passes no gradient through its own contribution."""
    block = decoder_layers(handle.model, handle.arch.row)[layer]
    inputs: list[torch.Tensor] = []

    def pre_hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inputs.append(args[0] if args else kwargs["hidden_states"])

    def post_hook(_module: Any, _args: Any, _kwargs: Any, output: Any) -> Any:
        x = inputs.pop()
        hidden = output[0] if isinstance(output, tuple) else output
        dropped = x + (hidden - x).detach()
        return (dropped, *output[1:]) if isinstance(output, tuple) else dropped

    handles = [
        block.register_forward_pre_hook(pre_hook, with_kwargs=True),
        block.register_forward_hook(post_hook, with_kwargs=True),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def atp_graddrop_scores(
    handle: ModelHandle,
    prompts: Sequence[str],
    answers: Sequence[str],
    tables: Mapping[SiteKey, ValueTable],
    kind: UnitKind,
    positions: PositionMode = "decode",
    batch_size: int = 64,
) -> torch.Tensor:
    """Signed AtP+GradDrop scores ``# [n_layers, width]`` (formula in the module docstring)."""
    kind = check_unit_kind(kind)
    keys = _site_keys(handle, kind, tables)
    _check_inputs(prompts, answers, batch_size)
    n_layers, width = handle.arch.n_layers, handle.arch.width(kind)
    # runs[0] = plain AtP; runs[l + 1] = block l's gradient dropped
    runs = torch.zeros(n_layers + 1, n_layers, width, dtype=torch.float64)
    for start in range(0, len(prompts), batch_size):
        rows = slice(start, start + batch_size)
        block = teacher_forced_block(handle, prompts[rows], answers[rows])
        for run in range(n_layers + 1):
            if run == 0:
                acts, grads, _ = activations_and_gradients(handle, block, keys)
            else:
                with gradient_dropped(handle, run - 1):
                    acts, grads, _ = activations_and_gradients(handle, block, keys)
            runs[run] += block_sums(block, acts, grads, tables, keys, positions)
    runs /= len(prompts)
    plain = runs[0]
    if n_layers == 1:
        return plain.float()
    dropped = runs[1:].abs()  # [dropped block, layer, width]
    own = torch.eye(n_layers, dtype=torch.bool)[:, :, None]  # a unit's own block is left out
    magnitude = dropped.masked_fill(own, 0.0).sum(0) / (n_layers - 1)
    sign = torch.where(plain < 0, -1.0, 1.0).to(magnitude.dtype)
    return (sign * magnitude).float()


__all__ = ["atp_graddrop_scores", "gradient_dropped"]


ATTRIBUTORS.register("atp_gd")(tables_method("atp_gd", atp_graddrop_scores))
