"""Prompt formats: how a task's question reaches the model.

* ``raw`` (reference parity): the task's own prompt text, no template (``23*45=``).
* ``fewshot``: ``n_shots`` solved examples, then the question, joined by the task's
  ``shot_separator``. The examples are drawn once with the run's seed from the task's prompt pool and
  removed from it, so a solved example is never evaluated.
* ``chat``: the tokenizer's chat template around the task's ``chat_message`` (its instruction and the
  question), with the generation prompt added; for instruct models.

A task that supports ``fewshot`` provides ``solved_example(row)`` (question + gold answer) and
``fewshot_question(row)``; one that supports ``chat`` provides ``chat_message(row)``. The formatted
text is the ``prompt`` column every later stage feeds to the model; the raw question is kept in the
``question`` column, and features are computed from the task's metadata, never from the template.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from mecharule.errors import ConfigError, DataError
from mecharule.random_streams import stream

PromptFormat = Literal["raw", "fewshot", "chat"]
PROMPT_FORMATS: tuple[str, ...] = ("raw", "fewshot", "chat")
#: The format a real (non-organism) model gets when the config does not name one: the raw organism
#: formats mean nothing to a pretrained model (SmolLM2-135M scores 0 % on raw HANS prompts).
REAL_MODEL_FORMATS: dict[str, str] = {"arithmetic": "fewshot", "hans_nli": "fewshot", "bon_jailbreak": "chat"}


def check_prompt_format(task_name: str, prompt_format: str, n_shots: int, supported: tuple[str, ...]) -> None:
    """One-line errors for an unknown or unsupported format and a bad shot count."""
    if prompt_format not in PROMPT_FORMATS:
        raise ConfigError(f"prompt_format={prompt_format!r}: allowed are {', '.join(PROMPT_FORMATS)}")
    if prompt_format not in supported:
        raise ConfigError(
            f"task {task_name!r} does not support prompt_format={prompt_format!r} "
            f"(supported: {', '.join(supported)})"
        )
    if prompt_format == "fewshot" and n_shots < 1:
        raise ConfigError(f"n_shots={n_shots}: fewshot needs at least one solved example")


def draw_shots(table: pd.DataFrame, n_shots: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(shots, rest)``: ``n_shots`` seeded rows as solved examples, and the rows left to evaluate."""
    if n_shots >= len(table):
        raise DataError(f"n_shots={n_shots} leaves no prompt to evaluate out of {len(table)}")
    rng = stream(seed, "task.shots")
    pick = rng.choice(len(table), size=n_shots, replace=False)
    keep = np.ones(len(table), dtype=bool)
    keep[pick] = False
    return table.iloc[pick].reset_index(drop=True), table[keep].reset_index(drop=True)


def render_prompts(task: Any, table: pd.DataFrame, shots: pd.DataFrame, tokenizer: Any) -> list[str]:
    """The text fed to the model for every row of ``table`` in the task's ``prompt_format``."""
    fmt = getattr(task, "prompt_format", "raw")
    rows = table.to_dict("records")
    if fmt == "raw":
        return table["prompt"].astype(str).tolist()
    if fmt == "fewshot":
        sep = task.shot_separator
        context = "".join(task.solved_example(s) + sep for s in shots.to_dict("records"))
        return [context + task.fewshot_question(r) for r in rows]
    if fmt == "chat":
        return [chat_prompt(tokenizer, task.chat_message(r)) for r in rows]
    raise ConfigError(f"prompt_format={fmt!r}: allowed are {', '.join(PROMPT_FORMATS)}")


def chat_prompt(tokenizer: Any, message: str) -> str:
    """One user turn through the tokenizer's chat template, generation prompt appended.

    A template that writes the BOS token itself is trimmed of it when the tokenizer also adds BOS on
    encoding, so the model never sees two.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "prompt_format='chat' needs a tokenizer with a chat template, and this model has none; "
            "use prompt_format 'raw' or 'fewshot'"
        )
    text = str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
    )
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        text = text[len(bos) :]
    return text


def _adds_bos(tokenizer: Any) -> bool:
    bos_id = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("x", add_special_tokens=True)["input_ids"]
    return bos_id is not None and len(ids) > 0 and ids[0] == bos_id


def format_task_prompts(
    task: Any, table: pd.DataFrame, tokenizer: Any, shots: pd.DataFrame | None = None
) -> pd.DataFrame:
    """``table`` with ``question`` (the raw prompt) and ``prompt`` (the formatted text)."""
    out = table.copy()
    out["question"] = out["prompt"].astype(str)
    out["prompt"] = render_prompts(task, table, shots if shots is not None else table.iloc[:0], tokenizer)
    return out
