"""Batched greedy generation: left padding, KV cache, stop at EOS, a stop string or max tokens.

The decoding loop is written out (rather than ``model.generate``) so the intervention engine can
share it: hooks see ``positions`` (absolute position of every row's token, -1 on padding) through
:class:`DecodeState`, which is how position-aligned ablation values are looked up.

Stop strings (a task's ``stop_strings``, e.g. a newline) are applied at the token level so that
every path (``measure``, the slow path, the engine's screen and its generation) stops at the same
token: a row finishes at EOS or at the first token whose own text contains a stop string
(:func:`stop_token_ids`); the decoded answer is then cut before the stop string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from transformers import DynamicCache

from mecharule.decoding.prefill import common_prefix_length, prefill, with_cache
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


def stop_token_ids(handle: ModelHandle, stop_strings: Sequence[str] = ()) -> torch.Tensor:
    """``# [n_stop]`` ids that end an answer: the EOS ids (tokenizer and generation config) plus every
    token whose text holds a stop string."""
    ids = set(eos_ids(handle)) | set(_string_stop_ids(handle.tokenizer, tuple(stop_strings)))
    return torch.as_tensor(sorted(ids), dtype=torch.long, device=handle.device)


def eos_ids(handle: ModelHandle) -> tuple[int, ...]:
    """The tokenizer's EOS id and any end-of-turn ids the model's generation config declares."""
    found = [handle.tokenizer.eos_token_id]
    declared = getattr(getattr(handle.model, "generation_config", None), "eos_token_id", None)
    found += declared if isinstance(declared, list) else [declared]
    return tuple(sorted({int(i) for i in found if i is not None}))


@lru_cache(maxsize=16)
def _string_stop_ids(tokenizer: Any, stop_strings: tuple[str, ...]) -> tuple[int, ...]:
    if not stop_strings:
        return ()
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False)
    return tuple(i for i, text in enumerate(texts) if any(s in text for s in stop_strings))


def answer_lengths(tokens: torch.Tensor, stop_ids: torch.Tensor) -> torch.Tensor:
    """``# [batch]`` generated tokens per row up to and including the first stop token."""
    is_stop = torch.isin(tokens, stop_ids)
    has_stop = is_stop.any(1)
    first = is_stop.float().argmax(1) + 1
    return torch.where(has_stop, first, torch.full_like(first, tokens.shape[1]))


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
    rows = [list(row) for row in token_ids]
    shared = common_prefix_length(rows)
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    if shared:  # [shared][pads][own tokens]: see mecharule.decoding.prefill
        ids[:, :shared] = torch.as_tensor(rows[0][:shared], dtype=torch.long)
        mask[:, :shared] = 1
    for i, row in enumerate(rows):
        ids[i, width - len(row) + shared :] = torch.as_tensor(row[shared:], dtype=torch.long)
        mask[i, width - len(row) + shared :] = 1
    return ids.to(handle.device), mask.to(handle.device)


def relative_positions(mask: torch.Tensor) -> torch.Tensor:
    """``# [batch, pos]`` offsets from the answer start (last prompt token -1) of a prompt block whose
    padding may sit anywhere before the last column; padding holds ``PAD_REL``."""
    rel = mask.cumsum(1) - mask.sum(1, keepdim=True) - 1
    return torch.where(mask.bool(), rel, torch.full_like(rel, PAD_REL))


@torch.inference_mode()
def greedy_generate(
    handle: ModelHandle,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    state: DecodeState | None = None,
    stop_strings: Sequence[str] = (),
) -> torch.Tensor:
    """Greedy tokens ``# [batch, max_new_tokens]``; positions after a stop token hold the pad id."""
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    rel = relative_positions(attention_mask) if state is not None else None
    cache, last_logits = prefill(handle, input_ids, attention_mask, position_ids, rel, state)
    return decode_loop(
        handle,
        last_logits,
        cache,
        attention_mask,
        position_ids[:, -1:] + 1,
        max_new_tokens,
        state,
        stop_strings,
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
    stop_strings: Sequence[str] = (),
) -> torch.Tensor:
    """Continue greedy decoding from the logits of the last prompt position (shared by every path)."""
    pad = handle.tokenizer.pad_token_id
    stop_ids = stop_token_ids(handle, stop_strings)
    batch = last_logits.shape[0]
    device = last_logits.device
    tokens = torch.full((batch, max_new_tokens), pad, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    logits = last_logits
    for step in range(max_new_tokens):
        nxt = logits.argmax(-1)
        nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
        tokens[:, step] = nxt
        finished |= torch.isin(nxt, stop_ids)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        if state is not None:
            state.rel_positions = torch.full((batch, 1), step, dtype=torch.long, device=device)
        out = handle.model(
            input_ids=nxt[:, None],
            attention_mask=attention_mask,
            position_ids=next_pos,
            **with_cache(handle.model, cache),
            use_cache=True,
        )
        logits = out.logits[:, -1, :]
        next_pos = next_pos + 1
    return tokens


def decode_answers(handle: ModelHandle, tokens: torch.Tensor, stop_strings: Sequence[str] = ()) -> list[str]:
    """Decode generated tokens up to the first stop token, skipping special tokens and cutting the
    text before the first stop string."""
    lengths = answer_lengths(tokens, stop_token_ids(handle, stop_strings)).tolist()
    eos = set(eos_ids(handle))
    rows = [row[:n] for row, n in zip(tokens.tolist(), lengths, strict=True)]
    rows = [row[:-1] if row and row[-1] in eos else row for row in rows]
    texts = handle.tokenizer.batch_decode(rows, skip_special_tokens=True)
    return [cut_at_stop(text, stop_strings) for text in texts]


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """``text`` before the earliest occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=len(text))
    return text[:cut]


def length_order(handle: ModelHandle, prompts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Token ids of every prompt (unpadded) and the prompt indices sorted by token length (stable)."""
    token_ids = handle.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]  # once, unpadded
    return token_ids, sorted(range(len(prompts)), key=lambda i: len(token_ids[i]))


def answer_batches(
    handle: ModelHandle,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 512,
    stop_strings: Sequence[str] = (),
    start: int = 0,
) -> Iterator[tuple[list[int], list[str]]]:
    """Greedy answers batch by batch in length order (:func:`length_order`), from sorted position
    ``start`` on: ``(prompt indices, their answers)`` per batch."""
    if not prompts:
        return
    token_ids, order = length_order(handle, prompts)
    for begin in range(start, len(order), batch_size):
        chunk = order[begin : begin + batch_size]
        ids, mask = left_pad(handle, [prompts[i] for i in chunk], [token_ids[i] for i in chunk])
        tokens = greedy_generate(handle, ids, mask, max_new_tokens, stop_strings=stop_strings)
        yield chunk, decode_answers(handle, tokens, stop_strings)


def generate_answers(
    handle: ModelHandle,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 512,
    progress: Callable[[int], None] | None = None,
    stop_strings: Sequence[str] = (),
) -> list[str]:
    """Greedy answers for every prompt, batched by similar length (order preserved)."""
    answers: list[str] = [""] * len(prompts)
    for chunk, texts in answer_batches(handle, prompts, max_new_tokens, batch_size, stop_strings):
        for i, answer in zip(chunk, texts, strict=True):
            answers[i] = answer
        if progress is not None:
            progress(len(chunk))
    return answers
