"""Batched greedy generation: left padding, KV cache, stop at EOS or max tokens.

The decoding loop is written out (rather than ``model.generate``) so the intervention engine can
share it: hooks see ``positions`` (absolute position of every row's token, -1 on padding) through
:class:`DecodeState`, which is how position-aligned ablation values are looked up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from mecharule.errors import DataError
from mecharule.models.loading import ModelHandle


@dataclass
class DecodeState:
    """What hooks may read during a forward: token positions relative to the answer start.

    ``rel_positions`` is ``# [batch, pos]``: -1 is the last prompt token, 0 the first generated token,
    ... ; padding holds a large negative sentinel. Updated before every forward call.
    """

    rel_positions: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.long))


PAD_REL = -(10**6)


def encode_prompts(handle: ModelHandle, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids, attention_mask`` ``# [batch, pos]``; errors on empty or unencodable text."""
    if not prompts:
        raise DataError("no prompts to encode; the prompt set is empty")
    return left_pad(handle, prompts, handle.tokenizer(list(prompts), add_special_tokens=True)["input_ids"])


def left_pad(
    handle: ModelHandle, prompts: Sequence[str], token_ids: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids, attention_mask`` ``# [batch, pos]`` of already tokenized prompts."""
    tok = handle.tokenizer
    unk = getattr(tok, "unk_token_id", None)
    if unk is not None and unk != tok.pad_token_id:
        bad = [i for i, row in enumerate(token_ids) if unk in row]
        if bad:
            raise DataError(
                f"the tokenizer cannot encode prompt {prompts[bad[0]]!r} (unknown characters); "
                f"{len(bad)} prompt(s) affected — use characters in the model's vocabulary"
            )
    if any(len(row) == 0 for row in token_ids):
        raise DataError("an empty prompt encodes to zero tokens; remove empty prompts")
    width = max(len(row) for row in token_ids)
    ids = torch.full((len(token_ids), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for i, row in enumerate(token_ids):
        ids[i, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids.to(handle.device), mask.to(handle.device)


def relative_positions(mask: torch.Tensor) -> torch.Tensor:
    """``# [batch, pos]`` offsets from the answer start for a left-padded prompt block."""
    lengths = mask.sum(1, keepdim=True)
    cols = torch.arange(mask.shape[1], device=mask.device)[None, :]
    start = mask.shape[1] - lengths  # first real column
    rel = cols - start - lengths  # last real column → -1
    return torch.where(mask.bool(), rel, torch.full_like(rel, PAD_REL))


@torch.inference_mode()
def greedy_generate(
    handle: ModelHandle,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    state: DecodeState | None = None,
) -> torch.Tensor:
    """Greedy tokens ``# [batch, max_new_tokens]``; positions after EOS hold the pad id."""
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    if state is not None:
        state.rel_positions = relative_positions(attention_mask)
    cache = DynamicCache(config=handle.model.config)
    out = handle.model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,  # only the last position's logits are used
    )
    return decode_loop(
        handle, out.logits[:, -1, :], cache, attention_mask, position_ids[:, -1:] + 1, max_new_tokens, state
    )


@torch.inference_mode()
def decode_loop(
    handle: ModelHandle,
    last_logits: torch.Tensor,
    cache: DynamicCache,
    attention_mask: torch.Tensor,
    next_pos: torch.Tensor,
    max_new_tokens: int,
    state: DecodeState | None = None,
) -> torch.Tensor:
    """Continue greedy decoding from the logits of the last prompt position (shared by every path)."""
    tok = handle.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    batch = last_logits.shape[0]
    device = last_logits.device
    tokens = torch.full((batch, max_new_tokens), pad, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    logits = last_logits
    for step in range(max_new_tokens):
        nxt = logits.argmax(-1)
        nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
        tokens[:, step] = nxt
        finished |= nxt == eos
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        if state is not None:
            state.rel_positions = torch.full((batch, 1), step, dtype=torch.long, device=device)
        out = handle.model(
            input_ids=nxt[:, None],
            attention_mask=attention_mask,
            position_ids=next_pos,
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :]
        next_pos = next_pos + 1
    return tokens


def decode_answers(handle: ModelHandle, tokens: torch.Tensor) -> list[str]:
    """Decode generated tokens, cutting at EOS and skipping special tokens."""
    eos = handle.tokenizer.eos_token_id
    rows = [row[: row.index(eos)] if eos in row else row for row in tokens.tolist()]
    return list(handle.tokenizer.batch_decode(rows, skip_special_tokens=True))


def generate_answers(
    handle: ModelHandle,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers for every prompt, batched by similar length (order preserved)."""
    if not prompts:
        return []
    token_ids = handle.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]  # once, unpadded
    order = sorted(range(len(prompts)), key=lambda i: len(token_ids[i]))
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = left_pad(handle, [prompts[i] for i in chunk], [token_ids[i] for i in chunk])
        for i, answer in zip(
            chunk, decode_answers(handle, greedy_generate(handle, ids, mask, max_new_tokens)), strict=True
        ):
            answers[i] = answer
        if progress is not None:
            progress(len(chunk))
    return answers
