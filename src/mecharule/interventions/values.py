"""Ablation values, aligned by position relative to the answer start (padding excluded).

``mean``: per unit and relative position, the mean activation over a reference prompt set run
teacher-forced on its own greedy answers. Offsets run from ``-max_prompt_len`` (first prompt token
of the longest prompt) to ``max_new_tokens - 1``; an offset no reference row reaches falls back to
the unit's mean over all real positions. ``zero``: zeros. ``resample``: the activation of another
(seeded, random) reference prompt at the same relative offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from mecharule.decoding.generation import PAD_REL, relative_positions
from mecharule.errors import ConfigError
from mecharule.interventions.hooks import SiteKey, recording
from mecharule.models.loading import ModelHandle
from mecharule.random_streams import stream

AblationKind = Literal["mean", "zero", "resample"]
PositionMode = Literal["decode", "generated", "all"]


@dataclass
class ValueTable:
    """Replacement values for one site: ``values[offset - min_offset, unit]`` ``# [n_offsets, width]``."""

    values: torch.Tensor
    min_offset: int

    def lookup(self, rel: torch.Tensor) -> torch.Tensor:
        """``# [batch, pos, width]`` replacement values for relative positions ``rel [batch, pos]``."""
        idx = (rel - self.min_offset).clamp(0, self.values.shape[0] - 1)
        return self.values[idx]


def position_gate(rel: torch.Tensor, mode: PositionMode) -> torch.Tensor:
    """Which positions are ablated ``# [batch, pos]`` (never padding)."""
    if mode == "decode":
        return rel >= -1
    if mode == "generated":
        return rel >= 0
    if mode == "all":
        return rel > PAD_REL
    raise ConfigError(f"positions={mode!r}: allowed are decode, generated, all")


def teacher_forced_batch(
    handle: ModelHandle, prompts: Sequence[str], answers: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded prompt+answer ids, mask and relative positions ``# [batch, pos]``.

    The answer is followed by EOS so the position that predicts EOS is part of the block.
    """
    tok = handle.tokenizer
    rows = []
    prompt_lens = []
    for prompt, answer in zip(prompts, answers, strict=True):
        p = tok(prompt, add_special_tokens=True)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append(p + a)
        prompt_lens.append(len(p))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    rel = torch.full((len(rows), width), PAD_REL, dtype=torch.long)
    for i, (r, plen) in enumerate(zip(rows, prompt_lens, strict=True)):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
        rel[i, width - len(r) :] = torch.arange(len(r)) - plen
    device = handle.device
    return ids.to(device), mask.to(device), rel.to(device)


@torch.inference_mode()
def mean_tables(
    handle: ModelHandle,
    keys: Sequence[SiteKey],
    prompts: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 256,
) -> dict[SiteKey, ValueTable]:
    """Position-aligned mean activation tables for the given sites (see module docstring)."""
    sums: dict[SiteKey, torch.Tensor] = {}
    counts: torch.Tensor | None = None
    min_off = 0
    max_off = 0
    batches = []
    for start in range(0, len(prompts), batch_size):
        batches.append(
            teacher_forced_batch(
                handle, prompts[start : start + batch_size], answers[start : start + batch_size]
            )
        )
    real = [rel[rel > PAD_REL] for _, _, rel in batches]
    min_off = int(min(r.min() for r in real))
    max_off = int(max(r.max() for r in real))
    n_off = max_off - min_off + 1
    counts = torch.zeros(n_off, dtype=torch.float64)
    for ids, mask, rel in batches:
        with recording(handle, list(keys)) as store:
            handle.model(  # only the recorded activations are used: keep one position's logits
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                logits_to_keep=1,
            )
        valid = rel > PAD_REL
        idx = (rel - min_off)[valid]  # [n_valid]
        counts += torch.bincount(idx.cpu(), minlength=n_off).double()
        for key in keys:
            act = store[key][0][valid].double().cpu()  # [n_valid, width]
            acc = sums.setdefault(key, torch.zeros(n_off, act.shape[1], dtype=torch.float64))
            acc.index_add_(0, idx.cpu(), act)
    tables = {}
    for key, total in sums.items():
        overall = total.sum(0) / counts.sum()
        table = torch.where(counts[:, None] > 0, total / counts.clamp(min=1)[:, None], overall[None, :])
        tables[key] = ValueTable(table.to(handle.device, dtype=_param_dtype(handle)), min_off)
    return tables


def zero_tables(handle: ModelHandle, keys: Sequence[SiteKey]) -> dict[SiteKey, ValueTable]:
    return {
        key: ValueTable(
            torch.zeros(1, handle.arch.width(key[1]), device=handle.device, dtype=_param_dtype(handle)), 0
        )
        for key in keys
    }


def resample_tables(
    handle: ModelHandle,
    keys: Sequence[SiteKey],
    prompts: Sequence[str],
    answers: Sequence[str],
    seed: int,
) -> dict[SiteKey, ValueTable]:
    """Values of ONE randomly drawn reference prompt (seeded), aligned by relative position."""
    rng = stream(seed, "ablation.resample")
    pick = int(rng.integers(len(prompts)))
    return mean_tables(handle, keys, [prompts[pick]], [answers[pick]])


def reference_tables(
    handle: ModelHandle,
    behaviour: pd.DataFrame,
    kind: str,
    ablation: AblationKind,
    n_reference: int,
    seed: int,
) -> dict[SiteKey, ValueTable]:
    """Ablation values for every layer of one unit kind, from a run's behaviour table.

    The reference prompts are ``n_reference`` TRAIN rows drawn from the ``ablation.reference`` stream and
    their stored greedy answers; every stage (attribution, localization, anchoring) uses this draw,
    so they all ablate towards the same values.
    """
    keys: list[SiteKey] = [(layer, kind) for layer in range(handle.arch.n_layers)]  # type: ignore[misc]
    if ablation == "zero":
        return zero_tables(handle, keys)
    train = np.flatnonzero((behaviour["split"] == "train").to_numpy())
    rng = stream(seed, "ablation.reference")
    ref = rng.choice(train, size=min(n_reference, len(train)), replace=False)
    prompts, answers = behaviour["prompt"].iloc[ref].tolist(), behaviour["answer"].iloc[ref].tolist()
    if ablation == "resample":
        return resample_tables(handle, keys, prompts, answers, seed)
    return mean_tables(handle, keys, prompts, answers)


def _param_dtype(handle: ModelHandle) -> torch.dtype:
    return next(handle.model.parameters()).dtype


__all__ = [
    "AblationKind",
    "PositionMode",
    "ValueTable",
    "mean_tables",
    "position_gate",
    "reference_tables",
    "relative_positions",
    "resample_tables",
    "teacher_forced_batch",
    "zero_tables",
]
