"""Arithmetic: ``{a}{op}{b}=`` questions (no spaces), answers scored against the exact integer truth.

Prompt formats (option ``prompt_format``, see :mod:`mecharule.tasks.formats`):

* ``raw``: ``23*45=`` (reference parity; the bundled organism's format);
* ``fewshot``: ``n_shots`` solved lines ``12+5=17`` before the question, one per line; generation
  stops at the newline that ends the answer line;
* ``chat``: the chat template around ``What is 23*45? Answer with the number only.``

Answer rules (option ``answer_rule``; the number pattern is an optional ``-`` then digits, with
``1,035``-style thousands separators and a decimal part read as one number; a number that is not
an integer, like ``3.5``, is never the truth):

* ``single_number`` (the reference's rule; default for ``raw`` and ``fewshot``): the answer holds
  exactly one number and it is the truth. ``3, so the equation is`` → 3;
  ``3, so the equation is 3`` → no parse (two numbers).
* ``first_number``: the first number of the answer is the truth.
* ``last_number`` (default for ``chat``, where models restate the question: ``23 * 45 = 1035``):
  the last number of the answer is the truth.
* ``exact``: the whole stripped answer is the integer (no leading zeros, nothing else).

``/`` is integer division truncated toward zero (``7/2=3``, ``-7/2=-3``); division by zero never
appears (``b`` starts at 1 for ``/``). The reference accepted prefix matches of float truths
("2" for 2.5); we do not. Prompts are parsed with a regex, never ``eval``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mecharule.errors import ConfigError
from mecharule.features.base import Feature
from mecharule.tasks.base import TASKS
from mecharule.tasks.formats import PROMPT_FORMATS, check_prompt_format

OPERATORS = ("+", "-", "*", "/")
_ANSWER = re.compile(r"^-?(0|[1-9][0-9]*)$")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(?:\.\d+)?")
OP_NAMES = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
ANSWER_RULES = ("single_number", "first_number", "last_number", "exact")
DEFAULT_RULE = {"raw": "single_number", "fewshot": "single_number", "chat": "last_number"}
DEFAULT_MAX_NEW_TOKENS = {"raw": 6, "fewshot": 8, "chat": 24}
CHAT_INSTRUCTION = "Answer with the number only."


def true_result(a: np.ndarray, b: np.ndarray, op: np.ndarray) -> np.ndarray:
    """Exact integer results; division truncates toward zero."""
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    out = np.zeros(len(a), dtype=np.int64)
    for symbol in OPERATORS:
        mask = op == symbol
        if not mask.any():
            continue
        x, y = a[mask], b[mask]
        if symbol == "+":
            out[mask] = x + y
        elif symbol == "-":
            out[mask] = x - y
        elif symbol == "*":
            out[mask] = x * y
        else:
            out[mask] = np.sign(x) * np.sign(y) * (np.abs(x) // np.abs(y))
    return out


def parse_answer(text: str, rule: str = "exact") -> int | None:
    """The integer an answer states under ``rule`` (see the module docstring), or None."""
    if rule == "exact":
        stripped = text.strip()
        return int(stripped) if _ANSWER.match(stripped) else None
    numbers = [float(m.replace(",", "")) for m in _NUMBER.findall(text)]
    if not numbers or (rule == "single_number" and len(numbers) != 1):
        return None
    value = numbers[-1] if rule == "last_number" else numbers[0]
    return int(value) if value.is_integer() else None


@TASKS.register("arithmetic")
@dataclass(frozen=True)
class ArithmeticTask:
    """``a op b =`` over all operand pairs in a range (both ends inclusive).

    ``max_new_tokens`` and ``answer_rule`` default (None) to the prompt format's choice.
    """

    operators: str = "+-*"
    min_operand: int = 0
    max_operand: int = 99
    max_new_tokens: int = None  # type: ignore[assignment]  # resolved in __post_init__
    prompt_format: str = "raw"
    n_shots: int = 5
    answer_rule: str | None = None
    instruction: str = CHAT_INSTRUCTION

    name = "arithmetic"
    positive_label = "correct"
    metadata_columns = ("operator", "a", "b", "truth")
    group_column = "operator"
    shot_separator = "\n"

    def __post_init__(self) -> None:
        check_prompt_format(self.name, self.prompt_format, self.n_shots, PROMPT_FORMATS)
        if self.max_new_tokens is None:
            object.__setattr__(self, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS[self.prompt_format])
        if self.answer_rule is None:
            object.__setattr__(self, "answer_rule", DEFAULT_RULE[self.prompt_format])
        if self.answer_rule not in ANSWER_RULES:
            raise ConfigError(f"answer_rule={self.answer_rule!r}: allowed are {', '.join(ANSWER_RULES)}")
        bad = [c for c in self.operators if c not in OPERATORS]
        if not self.operators or bad:
            raise ConfigError(f"operators={self.operators!r}: allowed characters are {''.join(OPERATORS)!r}")
        if not 0 <= self.min_operand <= self.max_operand:
            raise ConfigError(
                f"operand range [{self.min_operand}, {self.max_operand}] is empty or negative; "
                "need 0 <= min_operand <= max_operand"
            )
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens}: must be >= 1")

    def options(self) -> dict[str, Any]:
        return {
            "operators": self.operators,
            "min_operand": self.min_operand,
            "max_operand": self.max_operand,
            "max_new_tokens": self.max_new_tokens,
            "prompt_format": self.prompt_format,
            "n_shots": self.n_shots,
            "answer_rule": self.answer_rule,
            "instruction": self.instruction,
        }

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """A newline ends the answer in the real-model formats; the raw organism format uses EOS."""
        return () if self.prompt_format == "raw" else ("\n",)

    def solved_example(self, row: dict[str, Any]) -> str:
        return f"{row['prompt']}{row['truth']}"

    def fewshot_question(self, row: dict[str, Any]) -> str:
        return str(row["prompt"])

    def chat_message(self, row: dict[str, Any]) -> str:
        return f"What is {row['a']}{row['operator']}{row['b']}? {self.instruction}".strip()

    def parse_answers(self, answers: Sequence[str]) -> list[str | None]:
        rule = str(self.answer_rule)
        return [None if (v := parse_answer(a, rule)) is None else str(v) for a in answers]

    def prompts(self) -> pd.DataFrame:
        frames = []
        values = np.arange(self.min_operand, self.max_operand + 1)
        for op in self.operators:
            grid_a, grid_b = np.meshgrid(values, values, indexing="ij")
            a, b = grid_a.ravel(), grid_b.ravel()
            if op == "/":
                keep = b != 0
                a, b = a[keep], b[keep]
            frames.append(pd.DataFrame({"operator": op, "a": a, "b": b}))
        table = pd.concat(frames, ignore_index=True)
        table["truth"] = true_result(
            table["a"].to_numpy(), table["b"].to_numpy(), table["operator"].to_numpy()
        )
        table.insert(0, "prompt", table["a"].astype(str) + table["operator"] + table["b"].astype(str) + "=")
        return table

    def score(self, prompts: pd.DataFrame, answers: Sequence[str]) -> np.ndarray:
        parsed = [parse_answer(a, str(self.answer_rule)) for a in answers]
        truth = prompts["truth"].to_numpy()
        return np.array([p is not None and p == t for p, t in zip(parsed, truth, strict=True)], dtype=bool)

    def seed_features(self) -> Sequence[Feature]:
        from mecharule.tasks.builtin.arithmetic_features import arithmetic_features

        return arithmetic_features(self.operators)
