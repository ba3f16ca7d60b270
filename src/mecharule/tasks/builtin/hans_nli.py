"""HANS NLI: does the model tell entailment (E) from non-entailment (N) when words overlap?

Data: a real HANS file (option ``path``, see :func:`mecharule.tasks.hans_data.load_hans_file`) or,
by default, the offline HANS-style generator (:func:`mecharule.tasks.hans_data.generate_hans`).
``n_examples`` rows are drawn label-balanced with ``seed`` (generator default 2000; for a file,
None keeps every labelled row). Repeated premise/hypothesis pairs are dropped (first kept) before
sampling.

Prompt formats (option ``prompt_format``, see :mod:`mecharule.tasks.formats`):

* ``raw``: ``P: {premise}\nH: {hypothesis}\nA:`` (the organisms' format); with
  ``instruction=True`` the reference's line "Decide whether H must be true given P. Output only E
  or N." comes first (a string sets your own);
* ``fewshot``: ``n_shots`` solved examples ``Premise: ...\nHypothesis: ...\nDoes the premise
  entail the hypothesis? yes`` separated by blank lines, then the question; stops at a newline;
* ``chat``: the chat template around ``Premise: ...\nHypothesis: ...\nDoes the premise entail the
  hypothesis? Answer yes or no.``; stops at a newline.

Scoring (reference §2.4, extended to the words real models use): the predicted label is, in order
of precedence, N if the answer matches ``non[- ]?entailment``; E if it matches ``entailment``; else
the FIRST verdict word: ``yes``/``true``/``entails``/``entailed`` → E, ``no``/``false``/
``contradiction``/``neutral``/``not entail...`` → N; else the last standalone ``e``/``n`` letter;
else the answer with every non-letter removed being ``e`` or ``n`` (all case-insensitive). Anything
else is unparsable (``parsed`` is empty, ``parsed_ok`` false) and counts as wrong. Positive label
"correct" ⇔ predicted == expected.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from mecharule.errors import ConfigError, DataError
from mecharule.features.base import Feature
from mecharule.tasks.base import TASKS
from mecharule.tasks.formats import PROMPT_FORMATS, check_prompt_format
from mecharule.tasks.hans_data import (
    CONTROL,
    HEURISTICS,
    NLI_COLUMNS,
    REFERENCE_INSTRUCTION,
    format_nli_prompt,
    generate_hans,
    load_hans_file,
    sample_balanced,
)

logger = logging.getLogger(__name__)

DEFAULT_GENERATED_EXAMPLES = 2000
NEGATIONS = frozenset({"no", "not", "never", "none", "nobody", "nothing", "neither"})
ARTICLES = frozenset({"a", "an", "the"})
_WORD = re.compile(r"[A-Za-z]+(?:[-'][A-Za-z]+)?")
_NON_ENTAILMENT = re.compile(r"non[- ]?entailment")
_ENTAILMENT = re.compile(r"entailment")
_LETTER = re.compile(r"(?<![a-z])[en](?![a-z])")
_VERDICT_WORD = re.compile(
    r"\bnot\s+entail\w*|\b(?:yes|true|entails|entailed|no|false|contradiction|neutral)\b"
)
_E_WORDS = frozenset({"yes", "true", "entails", "entailed"})
QUESTION = "Does the premise entail the hypothesis?"
DEFAULT_MAX_NEW_TOKENS = {"raw": 3, "fewshot": 3, "chat": 8}


def parse_nli_answer(text: str) -> str | None:
    """The label ``"E"``/``"N"`` an answer states, or None (see the module docstring)."""
    lowered = text.lower()
    if _NON_ENTAILMENT.search(lowered):
        return "N"
    if _ENTAILMENT.search(lowered):
        return "E"
    verdict = _VERDICT_WORD.search(lowered)
    if verdict:
        return "E" if verdict.group(0) in _E_WORDS else "N"
    letters = _LETTER.findall(lowered)
    if letters:
        return str(letters[-1]).upper()
    compact = re.sub(r"[^a-z]", "", lowered)
    return compact.upper() if compact in ("e", "n") else None


@TASKS.register("hans_nli")
class HansNLITask:
    """Entailment vs non-entailment on HANS (file) or HANS-style generated pairs.

    Options: ``path`` (real HANS file; None = generator), ``n_examples`` (label-balanced sample;
    generator default 2000, file default all rows), ``seed``, ``control_fraction`` (generator share
    of ``none`` controls), ``instruction`` (False, True = reference line, or your own line),
    ``subcase_features`` (one binary seed feature per subcase), ``max_new_tokens``.
    """

    name: str = "hans_nli"
    positive_label: str = "correct"
    metadata_columns: tuple[str, ...] = NLI_COLUMNS
    group_column: str | None = "heuristic"

    def __init__(
        self,
        *,
        path: str | None = None,
        n_examples: int | None = None,
        seed: int = 0,
        control_fraction: float = 0.2,
        instruction: bool | str = False,
        subcase_features: bool = True,
        max_new_tokens: int | None = None,
        prompt_format: str = "raw",
        n_shots: int = 4,
    ) -> None:
        check_prompt_format(self.name, prompt_format, n_shots, PROMPT_FORMATS)
        if max_new_tokens is None:
            max_new_tokens = DEFAULT_MAX_NEW_TOKENS[prompt_format]
        if n_examples is not None and n_examples < 2:
            raise ConfigError(f"n_examples={n_examples}: must be >= 2 (one per label) or None")
        if not 0.0 <= control_fraction < 1.0:
            raise ConfigError(f"control_fraction={control_fraction}: must be in [0, 1)")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={max_new_tokens}: must be >= 1")
        self.path = path
        self.n_examples = n_examples
        self.seed = seed
        self.control_fraction = control_fraction
        self.instruction = instruction
        self.subcase_features = subcase_features
        self.max_new_tokens = max_new_tokens
        self.prompt_format = prompt_format
        self.n_shots = n_shots
        if path is not None:
            _ = self._table  # read the file now: a bad file fails before any model loads

    def __repr__(self) -> str:
        return f"HansNLITask(**{self.options()!r})"

    def options(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "n_examples": self.n_examples,
            "seed": self.seed,
            "control_fraction": self.control_fraction,
            "instruction": self.instruction,
            "subcase_features": self.subcase_features,
            "max_new_tokens": self.max_new_tokens,
            "prompt_format": self.prompt_format,
            "n_shots": self.n_shots,
        }

    shot_separator = "\n\n"

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return () if self.prompt_format == "raw" else ("\n",)

    def fewshot_question(self, row: dict[str, Any]) -> str:
        return f"Premise: {row['premise']}\nHypothesis: {row['hypothesis']}\n{QUESTION}"

    def solved_example(self, row: dict[str, Any]) -> str:
        return self.fewshot_question(row) + (" yes" if row["expected_label"] == "E" else " no")

    def chat_message(self, row: dict[str, Any]) -> str:
        return self.fewshot_question(row) + " Answer yes or no."

    def parse_answers(self, answers: Sequence[str]) -> list[str | None]:
        return [parse_nli_answer(a) for a in answers]

    @property
    def instruction_text(self) -> str | None:
        if isinstance(self.instruction, str):
            return self.instruction or None
        return REFERENCE_INSTRUCTION if self.instruction else None

    @cached_property
    def _table(self) -> pd.DataFrame:
        if self.path is None:
            table = generate_hans(
                self.n_examples or DEFAULT_GENERATED_EXAMPLES, self.seed, self.control_fraction
            )
        else:
            table = load_hans_file(self.path)
            repeated = table.duplicated(["premise", "hypothesis"])
            if repeated.any():
                logger.info("hans_nli: dropped %d repeated premise/hypothesis pairs", int(repeated.sum()))
                table = table[~repeated].reset_index(drop=True)
            if self.n_examples is not None:
                table = sample_balanced(table, self.n_examples, self.seed)
        instruction = self.instruction_text
        prompts = [
            format_nli_prompt(p, h, instruction)
            for p, h in zip(table["premise"], table["hypothesis"], strict=True)
        ]
        table.insert(0, "prompt", prompts)
        duplicated = table["prompt"].duplicated()
        if duplicated.any():
            logger.info("hans_nli: dropped %d duplicate prompts", int(duplicated.sum()))
            table = table[~duplicated].reset_index(drop=True)
        return table

    def prompts(self) -> pd.DataFrame:
        return self._table.copy()

    def score(self, prompts: pd.DataFrame, answers: Sequence[str]) -> np.ndarray:
        if len(prompts) != len(answers):
            raise DataError(
                f"score got {len(prompts)} prompts but {len(answers)} answers; pass one answer per row"
            )
        if "expected_label" not in prompts.columns:
            raise DataError("score needs the 'expected_label' column of hans_nli prompts()")
        predicted = [parse_nli_answer(a) for a in answers]
        expected = prompts["expected_label"].tolist()
        return np.array([p == e for p, e in zip(predicted, expected, strict=True)], dtype=bool)

    def seed_features(self) -> Sequence[Feature]:
        subcases = sorted(self._table["subcase"].unique()) if self.subcase_features else []
        return nli_features(subcases)


# ---------------------------------------------------------------------------------------------------
# Seed features (vectorised over the prompt table; pairwise text statistics are computed per row)


def words(text: str) -> list[str]:
    """Lowercased words: letters, optionally joined by one hyphen or apostrophe."""
    return [w.lower() for w in _WORD.findall(text)]


def lexical_overlap_ratio(premise: str, hypothesis: str) -> float:
    """|content(P) ∩ content(H)| / |content(H)| (sets, articles removed); NaN if H has no content word."""
    hyp = set(words(hypothesis)) - ARTICLES
    if not hyp:
        return float("nan")
    return len(hyp & (set(words(premise)) - ARTICLES)) / len(hyp)


def is_subsequence(premise: str, hypothesis: str) -> bool:
    """The hypothesis words occur in the premise in the same order (gaps allowed)."""
    remaining = iter(words(premise))
    return all(w in remaining for w in words(hypothesis))


def is_contiguous(premise: str, hypothesis: str) -> bool:
    """The hypothesis words occur in the premise as one contiguous run."""
    p, h = words(premise), words(hypothesis)
    return bool(h) and any(p[i : i + len(h)] == h for i in range(len(p) - len(h) + 1))


def _pairwise(fn: Callable[[str, str], float]) -> Callable[[pd.DataFrame], np.ndarray]:
    def compute(df: pd.DataFrame) -> np.ndarray:
        pairs = zip(df["premise"].astype(str), df["hypothesis"].astype(str), strict=True)
        return np.array([float(fn(p, h)) for p, h in pairs], dtype=np.float64)

    return compute


def _word_count(column: str) -> Callable[[pd.DataFrame], np.ndarray]:
    def compute(df: pd.DataFrame) -> np.ndarray:
        return np.array([len(words(t)) for t in df[column].astype(str)], dtype=np.float64)

    return compute


def _has_negation(column: str) -> Callable[[pd.DataFrame], np.ndarray]:
    def compute(df: pd.DataFrame) -> np.ndarray:
        return np.array([bool(NEGATIONS & set(words(t))) for t in df[column].astype(str)], dtype=np.float64)

    return compute


def _equals(column: str, value: str) -> Callable[[pd.DataFrame], np.ndarray]:
    def compute(df: pd.DataFrame) -> np.ndarray:
        return (df[column].astype(str) == value).to_numpy(dtype=np.float64)

    return compute


def _full_overlap(df: pd.DataFrame) -> np.ndarray:
    ratio = _pairwise(lexical_overlap_ratio)(df)
    return np.where(np.isnan(ratio), np.nan, (ratio >= 0.999).astype(np.float64))


def _length_difference(df: pd.DataFrame) -> np.ndarray:
    return _word_count("premise")(df) - _word_count("hypothesis")(df)


def _hypothesis_shorter(df: pd.DataFrame) -> np.ndarray:
    return (_length_difference(df) > 0).astype(np.float64)


def _text_features() -> list[Feature]:
    """Features of the premise and hypothesis text: overlap, order, lengths, negation."""
    no_content = "the hypothesis has no content word (only articles)"
    return [
        Feature(
            "lexical_overlap_ratio",
            "lexical overlap ratio (share of hypothesis content words in the premise)",
            _pairwise(lexical_overlap_ratio),
            "numeric",
            no_content,
        ),
        Feature(
            "full_lexical_overlap",
            "every hypothesis content word occurs in the premise",
            _full_overlap,
            "binary",
            no_content,
        ),
        Feature(
            "hypothesis_is_subsequence",
            "hypothesis is a subsequence of the premise",
            _pairwise(is_subsequence),
            "binary",
        ),
        Feature(
            "hypothesis_is_contiguous",
            "hypothesis is a contiguous run of premise words",
            _pairwise(is_contiguous),
            "binary",
        ),
        Feature("premise_length", "premise length in words", _word_count("premise"), "count"),
        Feature("hypothesis_length", "hypothesis length in words", _word_count("hypothesis"), "count"),
        Feature(
            "length_difference", "premise minus hypothesis length in words", _length_difference, "numeric"
        ),
        Feature(
            "hypothesis_shorter", "hypothesis is shorter than the premise", _hypothesis_shorter, "binary"
        ),
        Feature(
            "premise_has_negation", "premise contains a negation word", _has_negation("premise"), "binary"
        ),
        Feature(
            "hypothesis_has_negation",
            "hypothesis contains a negation word",
            _has_negation("hypothesis"),
            "binary",
        ),
    ]


def nli_features(subcases: Sequence[str] = ()) -> list[Feature]:
    """The seed features of NLI prompts (columns premise, hypothesis, heuristic, expected_label, subcase)."""
    features = _text_features()
    for heuristic in (*HEURISTICS, CONTROL):
        features.append(
            Feature(
                f"heuristic_{heuristic}",
                f"heuristic is {heuristic}",
                _equals("heuristic", heuristic),
                "binary",
            )
        )
    features.append(
        Feature("expected_entailment", "gold label is entailment", _equals("expected_label", "E"), "binary")
    )
    for subcase in subcases:
        slug = re.sub(r"\W+", "_", subcase).strip("_")
        features.append(
            Feature(f"subcase_{slug}", f"subcase is {subcase}", _equals("subcase", subcase), "binary")
        )
    return features
