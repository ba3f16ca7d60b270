"""Arithmetic: ``{a}{op}{b}=`` prompts (no spaces), answers scored by exact integer match.

Scoring, documented:

* ``+ - *`` have exact integer truths; the answer (generated text, stripped) must be exactly the
  decimal integer (``-`` sign for negatives, no leading zeros, no other characters).
* ``/`` is integer division truncated toward zero (``7/2=3``, ``-7/2=-3``); division by zero never
  appears (``b`` starts at 1 for ``/``). The reference accepted prefix matches of float truths
  ("2" for 2.5); we do not.
* Prompts are parsed with a regex, never ``eval``.
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

OPERATORS = ("+", "-", "*", "/")
_ANSWER = re.compile(r"^-?(0|[1-9][0-9]*)$")
OP_NAMES = {"+": "add", "-": "sub", "*": "mul", "/": "div"}


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


def parse_answer(text: str) -> int | None:
    """The integer an answer states, or None if it is not exactly one integer."""
    stripped = text.strip()
    return int(stripped) if _ANSWER.match(stripped) else None


@TASKS.register("arithmetic")
@dataclass(frozen=True)
class ArithmeticTask:
    """``a op b =`` over all operand pairs in a range (both ends inclusive)."""

    operators: str = "+-*"
    min_operand: int = 0
    max_operand: int = 99
    max_new_tokens: int = 6

    name = "arithmetic"
    positive_label = "correct"
    metadata_columns = ("operator", "a", "b", "truth")
    group_column = "operator"

    def __post_init__(self) -> None:
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
        }

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
        parsed = [parse_answer(a) for a in answers]
        truth = prompts["truth"].to_numpy()
        return np.array([p is not None and p == t for p, t in zip(parsed, truth, strict=True)], dtype=bool)

    def seed_features(self) -> Sequence[Feature]:
        from mecharule.tasks.builtin.arithmetic_features import arithmetic_features

        return arithmetic_features(self.operators)
