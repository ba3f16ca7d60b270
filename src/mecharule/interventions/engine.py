"""The batched ablation engine: (group, prompt) → new answer and label, fast and exact.

Per prompt set, once:
  * the unablated greedy answers are re-measured on this path; prompts whose label differs from the
    stored one are dropped and reported (``dropped``);
  * the KV cache of the un-ablated prefix (every position before the first ablated one) is built.
Per batch of groups (as many as fit the memory budget; rows = groups x prompts, each row with its own
unit mask):
  * one teacher-forced forward over the suffix (first ablated position + the baseline answer)
    *screens* rows: greedy output is unchanged iff the argmax agrees with the baseline token at every
    answer position (rows whose top-2 margin is below ``tie_margin`` somewhere count as diverging);
  * the diverging rows of all batches are then generated together (batches of the same row budget,
    the same prefix cache, per-row masks) to get their new answer and label.
The suffix holds the answer positions some prompt actually uses (not always ``max_new_tokens``), and
the ablation hooks touch only the ablated (row, unit) columns.
Cost: one suffix forward per group batch + generation of the (few) diverging rows, instead of a full
generation per group. The slow reference path is :mod:`mecharule.interventions.slow_path`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from transformers import DynamicCache

from mecharule.decoding.generation import (
    PAD_REL,
    DecodeState,
    answer_lengths,
    decode_answers,
    decode_loop,
    encode_prompts,
    relative_positions,
    stop_token_ids,
)
from mecharule.decoding.prefill import cache_tensors, prefill, select_cache, with_cache
from mecharule.interventions.hooks import SiteKey, patched
from mecharule.interventions.slow_path import ablation_patch
from mecharule.interventions.values import PositionMode, ValueTable
from mecharule.models.loading import ModelHandle
from mecharule.models.sites import Site
from mecharule.sizing import budget_mb

log = logging.getLogger(__name__)
Scorer = Callable[[pd.DataFrame, Sequence[str]], np.ndarray]
FIRST_ABLATED = {"decode": -1, "generated": 0, "all": None}
#: Top-2 logit margin below which a screened row is generated rather than trusted, per dtype: a few
#: units in the last place at typical logit sizes (~30), so that batch-shape rounding never decides.
TIE_MARGINS = {torch.float32: 1e-4, torch.float16: 0.05, torch.bfloat16: 0.5}


def is_out_of_memory(exc: BaseException) -> bool:
    """A device (CUDA) or host allocator out-of-memory error."""
    text = str(exc)
    return (
        isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text
    )


def tie_margin_for(dtype: torch.dtype) -> float:
    """The screening tie margin for logits of ``dtype`` (float32's for unknown types)."""
    return TIE_MARGINS.get(dtype, TIE_MARGINS[torch.float32])


@dataclass
class EngineStats:
    forwards: int = 0
    screened_rows: int = 0
    generated_rows: int = 0
    group_evaluations: int = 0


@dataclass
class GroupOutcome:
    """Labels ``# [groups, prompts]`` under ablation, and the new answers of rows that changed."""

    labels: np.ndarray
    changed_answers: dict[tuple[int, int], str] = field(default_factory=dict)

    def flips(self, baseline: np.ndarray) -> np.ndarray:
        return self.labels != baseline[None, :]


class AblationEngine:
    """Evaluate many unit groups on one prompt set. See the module docstring for the method."""

    def __init__(
        self,
        handle: ModelHandle,
        prompts: pd.DataFrame,
        scorer: Scorer,
        tables: Mapping[SiteKey, ValueTable],
        max_new_tokens: int,
        *,
        positions: PositionMode = "decode",
        stored_labels: np.ndarray | None = None,
        memory_budget_mb: int | str = 512,
        tie_margin: float | None = None,
        stop_strings: Sequence[str] = (),
    ) -> None:
        self.handle, self.scorer, self.tables = handle, scorer, tables
        self.max_new_tokens, self.positions = max_new_tokens, positions
        self.tie_margin = tie_margin_for(handle.model.dtype) if tie_margin is None else tie_margin
        self.stop_strings = tuple(stop_strings)
        self.budget_bytes = budget_mb(handle, memory_budget_mb) * 2**20
        self.stats = EngineStats()
        self._baseline(prompts.reset_index(drop=True), stored_labels)

    # -- set-up ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _baseline(self, prompts: pd.DataFrame, stored: np.ndarray | None) -> None:
        handle = self.handle
        ids, mask = encode_prompts(handle, prompts["prompt"].tolist())
        tokens = self._generate_plain(ids, mask)
        answers = decode_answers(handle, tokens, self.stop_strings)
        labels = np.asarray(self.scorer(prompts, answers), dtype=bool)
        keep = (
            np.ones(len(prompts), dtype=bool) if stored is None else labels == np.asarray(stored, dtype=bool)
        )
        self.dropped = np.flatnonzero(~keep)
        idx = torch.as_tensor(np.flatnonzero(keep), dtype=torch.long, device=handle.device)
        self.prompts = prompts.iloc[np.flatnonzero(keep)].reset_index(drop=True)
        self.baseline_answers = [a for a, k in zip(answers, keep, strict=True) if k]
        self.baseline_labels = labels[keep]
        self._prepare_blocks(ids[idx], mask[idx], tokens[idx])

    def _generate_plain(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from mecharule.decoding.generation import greedy_generate

        return greedy_generate(self.handle, ids, mask, self.max_new_tokens, stop_strings=self.stop_strings)

    def _prepare_blocks(self, ids: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor) -> None:
        """Split each prompt into a shared prefix (cached) and a teacher-forced suffix."""
        handle = self.handle
        pad = handle.tokenizer.pad_token_id
        _n, width = ids.shape
        first = FIRST_ABLATED[self.positions]
        cut = 0 if first is None else width + min(first, 0)  # prefix = columns [0, cut)
        self.cut = cut
        # answer length incl. the stop token (EOS or stop string) if one was generated
        n_ans = answer_lengths(tokens, stop_token_ids(handle, self.stop_strings))
        self.n_answer = n_ans
        self.answer_tokens = tokens
        self.n_steps = int(n_ans.max())  # answer positions any prompt has
        suffix_prompt = ids[:, cut:]
        answer_in = tokens[:, : self.n_steps - 1]  # the last generated token is never an input
        answer_mask = (
            torch.arange(answer_in.shape[1], device=ids.device)[None, :] < (n_ans[:, None] - 1)
        ).long()
        answer_in = torch.where(answer_mask.bool(), answer_in, torch.full_like(answer_in, pad))
        self.suffix_ids = torch.cat([suffix_prompt, answer_in], 1)
        self.full_mask = torch.cat([mask, answer_mask], 1)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        ans_pos = pos[:, -1:] + 1 + torch.arange(answer_in.shape[1], device=ids.device)[None, :]
        self.suffix_pos = torch.cat([pos[:, cut:], ans_pos], 1)
        rel_prompt = relative_positions(mask)
        rel_ans = torch.where(
            answer_mask.bool(), torch.arange(answer_in.shape[1], device=ids.device)[None, :], PAD_REL
        )
        self.suffix_rel = torch.cat([rel_prompt[:, cut:], rel_ans], 1)
        self.prompt_width = width
        self.prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.prompt_ids, self.prompt_mask, self.prompt_pos, self.prompt_rel = ids, mask, pos, rel_prompt
        self.prefix_last_logits: torch.Tensor | None = None
        if cut > 0:
            cache, last_logits = prefill(handle, ids[:, :cut], mask[:, :cut], pos[:, :cut])
            self.prefix = cache_tensors(cache)
            if cut == width:
                self.prefix_last_logits = last_logits
            self.stats.forwards += 1
        self._row_bytes = self._bytes_per_row()

    def _bytes_per_row(self) -> int:
        arch = self.handle.arch
        vocab = int(self.handle.model.config.vocab_size)
        per_tok = arch.n_layers * (12 * arch.d_model + 4 * arch.d_mlp) + 2 * vocab
        return 4 * (self.suffix_ids.shape[1] * per_tok + 2 * arch.n_layers * self.cut * arch.d_model)

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    @property
    def rows_per_forward(self) -> int:
        """(group, prompt) rows one screening forward holds under the memory budget."""
        return max(1, int(self.budget_bytes // max(1, self._row_bytes)))

    @property
    def groups_per_forward(self) -> int:
        """Groups one screening forward evaluates on every prompt (1 when the prompts need chunks)."""
        n_p = self.n_prompts
        return max(1, self.rows_per_forward // n_p) if 0 < n_p <= self.rows_per_forward else 1

    # -- evaluation --------------------------------------------------------------------------------
    def run(self, groups: Sequence[Sequence[Site]]) -> GroupOutcome:
        """Labels of every (group, prompt) under mean/zero/resample ablation of the group.

        Out of memory in a forward halves the memory budget and runs the groups again (down to one
        row per forward), instead of failing the stage; the labels do not depend on the batch size.
        """
        while True:
            try:
                return self._run(groups)
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not is_out_of_memory(exc) or self.rows_per_forward <= 1:
                    raise
                before = self.rows_per_forward
                self.budget_bytes = max(1, self.budget_bytes // 2)
                if self.handle.device.type == "cuda":
                    torch.cuda.empty_cache()
                log.warning(
                    "out of memory with %d rows per forward; retrying with %d", before, self.rows_per_forward
                )

    def _run(self, groups: Sequence[Sequence[Site]]) -> GroupOutcome:
        n_p = self.n_prompts
        labels = np.repeat(self.baseline_labels[None, :], len(groups), axis=0)
        outcome = GroupOutcome(labels)
        if n_p == 0 or not groups:
            return outcome
        max_rows = self.rows_per_forward
        device = self.handle.device
        diverging: list[tuple[torch.Tensor, torch.Tensor]] = []  # (group, prompt) of rows to generate
        if n_p <= max_rows:
            step = max(1, max_rows // n_p)
            everything = torch.arange(n_p, device=device)
            for start in range(0, len(groups), step):
                diverging.append(self._screen_batch(groups[start : start + step], start, everything))
        else:  # one group at a time, prompts in chunks
            for g in range(len(groups)):
                for start in range(0, n_p, max_rows):
                    chunk = torch.arange(start, min(n_p, start + max_rows), device=device)
                    diverging.append(self._screen_batch(groups[g : g + 1], g, chunk))
        group_idx = torch.cat([d[0] for d in diverging])
        prompt_idx = torch.cat([d[1] for d in diverging])
        for start in range(0, len(group_idx), max_rows):  # generation batches span screening batches
            rows = slice(start, start + max_rows)
            self._generate_batch(groups, group_idx[rows], prompt_idx[rows], outcome)
        self.stats.group_evaluations += len(groups)
        return outcome

    def _row_masks(self, groups: Sequence[Sequence[Site]]) -> dict[SiteKey, torch.Tensor]:
        """Per site key, ``# [groups, width]`` unit masks."""
        device = self.handle.device
        masks: dict[SiteKey, torch.Tensor] = {}
        for g, group in enumerate(groups):
            for site in group:
                key = (site.layer, site.kind)
                if key not in masks:
                    masks[key] = torch.zeros(
                        len(groups), self.handle.arch.width(site.kind), dtype=torch.bool, device=device
                    )
                masks[key][g, site.index] = True
        return masks

    @torch.inference_mode()
    def _screen_batch(
        self, groups: Sequence[Sequence[Site]], offset: int, prompts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Screen every (group, prompt) row; return ``(group index, prompt index)`` of diverging rows."""
        n_p, n_g = len(prompts), len(groups)
        prompt_of_row = prompts.repeat(n_g)  # row = g * n_p + i  ->  prompt prompts[i]
        row_masks = {k: m.repeat_interleave(n_p, dim=0) for k, m in self._row_masks(groups).items()}
        rows = torch.nonzero(self._screen(prompt_of_row, row_masks)).flatten()
        return rows // n_p + offset, prompt_of_row.index_select(0, rows)

    @torch.inference_mode()
    def _generate_batch(
        self,
        groups: Sequence[Sequence[Site]],
        group_idx: torch.Tensor,
        prompt_idx: torch.Tensor,
        outcome: GroupOutcome,
    ) -> None:
        """Generate the given (group, prompt) rows, each with its own group ablated; record labels."""
        if len(group_idx) == 0:
            return
        gs, ps = group_idx.cpu().numpy(), prompt_idx.cpu().numpy()
        answers = self._generate_rows(prompt_idx, self._row_masks([groups[g] for g in gs]))
        table = self.prompts.iloc[ps].reset_index(drop=True)
        new_labels = np.asarray(self.scorer(table, answers), dtype=bool)
        for g, p, answer, label in zip(gs, ps, answers, new_labels, strict=True):
            if answer != self.baseline_answers[p]:
                outcome.changed_answers[(int(g), int(p))] = answer
            outcome.labels[int(g), int(p)] = label

    def _screen(self, prompt_of_row: torch.Tensor, row_masks: dict[SiteKey, torch.Tensor]) -> torch.Tensor:
        """Teacher-forced check: True where greedy output may differ from the baseline."""
        state = DecodeState(rel_positions=self.suffix_rel.index_select(0, prompt_of_row))
        logits = self._forward(prompt_of_row, row_masks, state)  # [rows, suffix, vocab]
        # logits at suffix column j predict the token after it; answer token t is predicted at column
        # (n_prompt_suffix - 1 + t)
        start = self.prompt_width - self.cut - 1
        n_ans = self.n_answer.index_select(0, prompt_of_row)
        targets = self.answer_tokens.index_select(0, prompt_of_row)
        diverging = torch.zeros(len(prompt_of_row), dtype=torch.bool, device=logits.device)
        for t in range(self.n_steps):
            col = start + t
            if col < 0:
                continue  # predicted from the cached (unablated) prefix: unchanged
            active = t < n_ans
            top2 = logits[:, col, :].topk(2, dim=-1)
            wrong = top2.indices[:, 0] != targets[:, t]
            tie = (top2.values[:, 0] - top2.values[:, 1]) < self.tie_margin
            diverging |= active & (wrong | tie)
        self.stats.screened_rows += len(prompt_of_row)
        return diverging

    def _forward(
        self, prompt_of_row: torch.Tensor, row_masks: dict[SiteKey, torch.Tensor], state: DecodeState
    ) -> torch.Tensor:
        cache = select_cache(self.handle, self.prefix, prompt_of_row) if self.prefix is not None else None
        patches = {k: ablation_patch(state, self.tables[k], m, self.positions) for k, m in row_masks.items()}
        with patched(self.handle, patches):
            out = self.handle.model(
                input_ids=self.suffix_ids.index_select(0, prompt_of_row),
                attention_mask=self.full_mask.index_select(0, prompt_of_row),
                position_ids=self.suffix_pos.index_select(0, prompt_of_row),
                **with_cache(self.handle.model, cache),
                use_cache=cache is not None,
            )
        self.stats.forwards += 1
        return out.logits

    def _generate_rows(
        self, prompt_of_row: torch.Tensor, row_masks: dict[SiteKey, torch.Tensor]
    ) -> list[str]:
        """Exact greedy generation for the given rows, from the shared prefix cache."""
        tokens = self._decode_from_prefix(prompt_of_row, row_masks)
        self.stats.generated_rows += len(prompt_of_row)
        return decode_answers(self.handle, tokens, self.stop_strings)

    @torch.inference_mode()
    def _decode_from_prefix(
        self, prompt_of_row: torch.Tensor, row_masks: dict[SiteKey, torch.Tensor]
    ) -> torch.Tensor:
        """Greedy tokens ``# [rows, max_new_tokens]`` with each row's own unit mask applied."""
        handle, cut, width = self.handle, self.cut, self.prompt_width
        state = DecodeState()
        patches = {k: ablation_patch(state, self.tables[k], m, self.positions) for k, m in row_masks.items()}
        mask = self.prompt_mask.index_select(0, prompt_of_row)
        pos = self.prompt_pos.index_select(0, prompt_of_row)
        with patched(handle, patches):
            if self.prefix is not None:
                cache = select_cache(handle, self.prefix, prompt_of_row)
            else:
                cache = DynamicCache(config=handle.model.config)
            if cut < width:
                state.rel_positions = self.prompt_rel.index_select(0, prompt_of_row)[:, cut:]
                out = handle.model(
                    input_ids=self.prompt_ids.index_select(0, prompt_of_row)[:, cut:],
                    attention_mask=mask,
                    position_ids=pos[:, cut:],
                    **with_cache(handle.model, cache),
                    use_cache=True,
                    logits_to_keep=1,
                )
                self.stats.forwards += 1
                last = out.logits[:, -1, :]
            else:
                assert self.prefix_last_logits is not None  # internal invariant: cut == width sets it
                last = self.prefix_last_logits.index_select(0, prompt_of_row)
            return decode_loop(
                handle, last, cache, mask, pos[:, -1:] + 1, self.max_new_tokens, state, self.stop_strings
            )
