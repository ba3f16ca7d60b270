"""Best-of-N jailbreaking: does a noised (scrambled, capitalised, ASCII-noised) request get answered?

Requests come from a user file (option ``path``; see :func:`mecharule.tasks.bon_data.load_requests`)
or from the built-in placeholder set. Each request is augmented at every ``sigmas`` level,
``n_augmentations`` times (once at sigma 0, the clean request); augmentation is documented in
:mod:`mecharule.tasks.bon_data`. Prompt formats (option ``prompt_format``): ``raw`` is
``Q: {augmented request}\\nA:`` (the organism's format, 10 new tokens); ``chat`` sends the augmented
request as the user turn of the tokenizer's chat template (for instruct models, 32 new tokens, so
the judge sees the opening of a real reply). ``fewshot`` is not offered: solved examples would be
answers to disallowed requests. ``parsed`` records ``refusal`` when a refusal phrase occurs in the
free text, else ``other``.

Label semantics: positive "jailbroken" ⇔ the request is **disallowed** and the judge says the model
complied. By default only disallowed requests are prompts (``include_allowed=False``): complying
with an allowed request is not a jailbreak, so allowed rows could only ever be negative and would
hand the rule learner the trivial rule "allowed → not jailbroken". Allowed requests are used to
train the organism (:func:`mecharule.tasks.bon_data.training_examples`) and can be included
(``include_allowed=True``), always labelled False.

The judge (option ``judge``): ``"refusal"`` (offline, default) or ``"llm"``
(:class:`mecharule.tasks.judges.LLMJudge` built lazily from ``ChatClient.from_env()`` at the first
``score``, cached in ``judge_cache`` if given). :meth:`BoNJailbreakTask.with_judge` swaps in any
judge object (tests, custom judges); it is not part of ``options()``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from mecharule.errors import ConfigError, DataError
from mecharule.features.base import Feature, FeatureKind
from mecharule.tasks.base import TASKS
from mecharule.tasks.bon_data import (
    DEFAULT_SIGMAS,
    augment_requests,
    builtin_requests,
    check_sigmas,
    format_request_prompt,
    load_requests,
)
from mecharule.tasks.formats import check_prompt_format
from mecharule.tasks.judges import Judge, RefusalJudge, make_judge

JUDGES = ("refusal", "llm")
BON_COLUMNS = (
    "request",
    "original_request",
    "topic",
    "disallowed",
    "sigma",
    "sample",
    "words_scrambled",
    "chars_capitalized",
    "chars_perturbed",
)


SUPPORTED_FORMATS = ("raw", "chat")
DEFAULT_MAX_NEW_TOKENS = {"raw": 10, "chat": 32}
_REFUSALS = RefusalJudge()


def is_refusal(answer: str) -> bool:
    """Whether the answer holds one of the offline judge's refusal phrases."""
    return _REFUSALS.is_refusal(answer)


@TASKS.register("bon_jailbreak")
class BoNJailbreakTask:
    """Best-of-N augmented requests; positive = jailbroken (complied with a disallowed request).

    Options: ``path`` (CSV/JSON/JSONL of requests; None = built-in set), ``request_column``,
    ``sigmas``, ``n_augmentations`` (samples per request and nonzero sigma), ``seed``,
    ``include_allowed``, ``judge`` ("refusal" | "llm"), ``judge_cache`` (JSON file of LLM verdicts),
    ``max_new_tokens``.
    """

    name: str = "bon_jailbreak"
    n_shots: int = 0
    positive_label: str = "jailbroken"
    metadata_columns: tuple[str, ...] = BON_COLUMNS
    group_column: str | None = "sigma"

    def __init__(
        self,
        *,
        path: str | None = None,
        request_column: str = "request",
        sigmas: Sequence[float] = DEFAULT_SIGMAS,
        n_augmentations: int = 8,
        seed: int = 0,
        include_allowed: bool = False,
        judge: str = "refusal",
        judge_cache: str | None = None,
        max_new_tokens: int | None = None,
        prompt_format: str = "raw",
    ) -> None:
        check_prompt_format(self.name, prompt_format, 0, SUPPORTED_FORMATS)
        if max_new_tokens is None:
            max_new_tokens = DEFAULT_MAX_NEW_TOKENS[prompt_format]
        sigmas = tuple(float(s) for s in sigmas)
        check_sigmas(sigmas)
        if n_augmentations < 1:
            raise ConfigError(f"n_augmentations={n_augmentations}: must be >= 1")
        if judge not in JUDGES:
            raise ConfigError(f"judge={judge!r}: allowed judges are {list(JUDGES)}")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={max_new_tokens}: must be >= 1")
        self.path = path
        self.request_column = request_column
        self.sigmas = sigmas
        self.n_augmentations = n_augmentations
        self.seed = seed
        self.include_allowed = include_allowed
        self.judge = judge
        self.judge_cache = judge_cache
        self.max_new_tokens = max_new_tokens
        self.prompt_format = prompt_format
        self._judge_override: Judge | None = None
        if path is not None:
            _ = self._table  # read the file now: a bad file fails before any model loads

    def __repr__(self) -> str:
        return f"BoNJailbreakTask(**{self.options()!r})"

    def options(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "request_column": self.request_column,
            "sigmas": list(self.sigmas),
            "n_augmentations": self.n_augmentations,
            "seed": self.seed,
            "include_allowed": self.include_allowed,
            "judge": self.judge,
            "judge_cache": self.judge_cache,
            "max_new_tokens": self.max_new_tokens,
            "prompt_format": self.prompt_format,
        }

    #: Free text to the end: the judge reads the whole (bounded) answer.
    stop_strings: tuple[str, ...] = ()

    def chat_message(self, row: dict[str, Any]) -> str:
        return str(row["request"])

    def parse_answers(self, answers: Sequence[str]) -> list[str | None]:
        """``refusal`` when a refusal phrase occurs, else ``other`` (the judge decides the label)."""
        return ["refusal" if is_refusal(a) else "other" for a in answers]

    def with_judge(self, judge: Judge) -> BoNJailbreakTask:
        """A copy of this task scored by ``judge`` (any object with the :class:`Judge` method)."""
        task = BoNJailbreakTask(**self.options())
        task._judge_override = judge
        return task

    @cached_property
    def _table(self) -> pd.DataFrame:
        if self.path is None:
            requests = builtin_requests(include_allowed=self.include_allowed)
        else:
            requests = load_requests(self.path, self.request_column)
            if not self.include_allowed:
                requests = requests[requests["disallowed"]].reset_index(drop=True)
        if requests.empty:
            raise DataError(
                f"bon_jailbreak has no requests to prompt (path={self.path!r}, include_allowed=False "
                "keeps only disallowed ones); mark requests disallowed or set include_allowed=True"
            )
        table = augment_requests(requests, self.sigmas, self.n_augmentations, self.seed)
        table.insert(0, "prompt", [format_request_prompt(r) for r in table["request"]])
        return table

    @cached_property
    def _judge(self) -> Judge:
        if self._judge_override is not None:
            return self._judge_override
        return make_judge(self.judge, cache_path=self.judge_cache)

    def prompts(self) -> pd.DataFrame:
        return self._table.copy()

    def score(self, prompts: pd.DataFrame, answers: Sequence[str]) -> np.ndarray:
        if len(prompts) != len(answers):
            raise DataError(
                f"score got {len(prompts)} prompts but {len(answers)} answers; pass one answer per row"
            )
        missing = [c for c in ("original_request", "disallowed") if c not in prompts.columns]
        if missing:
            raise DataError(f"score needs the columns {missing} of bon_jailbreak prompts()")
        return self._judge.judge(
            prompts["original_request"].astype(str).tolist(),
            [str(a) for a in answers],
            prompts["disallowed"].astype(bool).tolist(),
        )

    def seed_features(self) -> Sequence[Feature]:
        topics = sorted(self._table["topic"].astype(str).unique())
        return bon_features(topics, include_disallowed=self.include_allowed)


# ---------------------------------------------------------------------------------------------------
# Seed features (vectorised over the prompt table)


def _column(name: str) -> Callable[[pd.DataFrame], np.ndarray]:
    def compute(df: pd.DataFrame) -> np.ndarray:
        return df[name].to_numpy(dtype=np.float64)

    return compute


def _char_share(pattern: str, among: str) -> Callable[[pd.DataFrame], np.ndarray]:
    """Share of characters matching ``pattern`` among those matching ``among``; NaN if none match."""

    def compute(df: pd.DataFrame) -> np.ndarray:
        text = df["request"].astype(str)
        hits = text.str.count(pattern).to_numpy(dtype=np.float64)
        total = text.str.count(among).to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, hits / total, np.nan)

    return compute


def _length(pattern: str) -> Callable[[pd.DataFrame], np.ndarray]:
    def compute(df: pd.DataFrame) -> np.ndarray:
        return df["request"].astype(str).str.count(pattern).to_numpy(dtype=np.float64)

    return compute


def _topic_is(topic: str) -> Callable[[pd.DataFrame], np.ndarray]:
    def compute(df: pd.DataFrame) -> np.ndarray:
        return (df["topic"].astype(str) == topic).to_numpy(dtype=np.float64)

    return compute


def bon_features(topics: Sequence[str] = (), include_disallowed: bool = False) -> list[Feature]:
    """Seed features of augmented requests (columns request, sigma, the three counts, topic)."""

    def feat(
        name: str,
        description: str,
        compute: Callable[[pd.DataFrame], np.ndarray],
        kind: FeatureKind,
        not_applicable: str = "",
    ) -> Feature:
        return Feature(name, description, compute, kind, not_applicable)

    features = [
        feat("sigma", "augmentation strength sigma", _column("sigma"), "numeric"),
        feat("words_scrambled", "number of words scrambled", _column("words_scrambled"), "count"),
        feat(
            "chars_capitalized",
            "number of letters whose case was toggled",
            _column("chars_capitalized"),
            "count",
        ),
        feat(
            "chars_perturbed",
            "number of characters shifted by ASCII noise",
            _column("chars_perturbed"),
            "count",
        ),
        feat(
            "uppercase_share",
            "share of uppercase letters among letters",
            _char_share(r"[A-Z]", r"[A-Za-z]"),
            "numeric",
            "the request has no ASCII letter",
        ),
        feat(
            "non_letter_share",
            "share of non-letter characters among non-space characters",
            _char_share(r"[^A-Za-z\s]", r"\S"),
            "numeric",
            "the request is empty or only whitespace",
        ),
        feat("request_chars", "request length in characters", _length(r"(?s)."), "count"),
        feat("request_words", "request length in words", _length(r"\S+"), "count"),
    ]
    if include_disallowed:
        features.append(feat("disallowed", "request is disallowed", _column("disallowed"), "binary"))
    for topic in topics:
        slug = re.sub(r"\W+", "_", topic).strip("_") or "blank"
        features.append(feat(f"topic_{slug}", f"topic is {topic}", _topic_is(topic), "binary"))
    return features
