"""Contrastive feature proposal: ask an LLM for Python features that separate two groups of prompts.

Each round samples positive and negative example prompts, shows them with the features already
defined, and asks for a JSON list of ``{label, description, python_src}``. The task's system prompt
is sent WHOLE (the reference sent its first character only). Answers are parsed leniently (code
fences, prose around the JSON, trailing commas, a single object, a truncated list) and every item
is checked by the sandbox's AST validator; bad items are skipped and logged, never fatal. A round
that yields nothing is retried at most ``max_attempts`` times, so the loop always ends (the
reference retried forever). Labels are deduplicated after normalisation. Every item skipped here
(unparseable, duplicate label, failed validation) is also handed to the ``on_skip`` callback as a
:class:`SkippedProposal`, so a run can log every proposal and its fate.

The functions proposed here have NOT run yet: pass them to
:func:`mecharule.features.sandbox.score_proposed_features`.
"""

from __future__ import annotations

import json
import logging
import re
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from mecharule.errors import ConfigError, DataError, SandboxError
from mecharule.features.sandbox import ProposedFeature, feature_name, validate_feature_source
from mecharule.llm.client import ChatCompleter

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_SYSTEM_PROMPT", "ExampleGroups", "LabelledPrompts", "ProposalBrief", "ProposalSettings",
           "ProposedFeature", "SkippedProposal", "build_proposal_prompt", "parse_feature_list",
           "propose_features"]  # fmt: skip

DEFAULT_SYSTEM_PROMPT = (
    "You are an expert in interpretability who designs simple, deterministic Python features of a "
    "language model's input prompts. Good features are readable, cheap to compute, and separate the "
    "prompts the model handles one way from those it handles the other way. You answer with JSON only."
)
MAX_EXAMPLE_CHARS = 400
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[\]}])")


@dataclass(frozen=True)
class SkippedProposal:
    """An answer item that never became a :class:`ProposedFeature`, and why.

    ``stage``: "parse" (no usable item; ``label`` is None), "duplicate" (its normalised label was
    taken) or "validation" (the AST allow-list refused its source, which was never run).
    """

    round: int
    label: str | None
    stage: Literal["parse", "duplicate", "validation"]
    reason: str
    python_src: str = ""


@dataclass(frozen=True)
class LabelledPrompts:
    """The prompts the features must tell apart: a table with a ``prompt`` column (its other
    columns are the ``info`` of each row) and one label per row, True where the row shows the
    behaviour (group A) and False where it does not (group B)."""

    prompts: pd.DataFrame
    labels: Sequence[bool] | np.ndarray


@dataclass(frozen=True)
class ProposalBrief:
    """What the LLM is told besides the examples.

    ``system_prompt`` is sent whole; ``positive_label`` names the behaviour of group A
    ("correct", "jailbroken"); ``info_keys`` are the ``info`` keys the functions may read (None:
    every column of the table but ``prompt``); ``existing`` lists (name, description) of the
    features already defined (seed features): they are shown to the LLM and their names are never
    proposed again.
    """

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    positive_label: str = "positive"
    info_keys: Sequence[str] | None = None
    existing: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True)
class ProposalSettings:
    """How the proposal rounds run.

    ``n_rounds`` rounds, each asking for ``n_features`` features and showing ``n_examples``
    prompts of each group and up to ``max_shown`` earlier proposals; a round that yields nothing
    is sent again, at most ``max_attempts`` times in all. ``temperature`` and ``max_tokens`` go
    to the LLM; ``seed`` (or a generator) draws the examples and the LLM's seeds.
    """

    n_rounds: int = 10
    n_features: int = 16
    n_examples: int = 32
    max_shown: int = 20
    max_attempts: int = 3
    temperature: float = 0.3
    max_tokens: int | None = None
    seed: int | np.random.Generator = 42


def propose_features(
    client: ChatCompleter,
    examples: LabelledPrompts,
    *,
    brief: ProposalBrief | None = None,
    settings: ProposalSettings | None = None,
    on_skip: Callable[[SkippedProposal], None] | None = None,
) -> list[ProposedFeature]:
    """Run ``settings.n_rounds`` contrastive proposal rounds; return the new, valid, distinct proposals.

    ``examples`` holds the prompts and their labels; ``brief`` (default :class:`ProposalBrief`)
    what the LLM is told about them; ``settings`` (default :class:`ProposalSettings`) how many
    rounds, features and examples. At most ``n_rounds * max_attempts`` requests are sent.
    ``on_skip`` receives every item not kept.
    """
    brief = brief or ProposalBrief()
    settings = settings or ProposalSettings()
    _check_settings(settings)
    prompts = examples.prompts
    texts, positives, negatives = _split_examples(prompts, examples.labels)
    info_keys = brief.info_keys
    keys = [c for c in prompts.columns if c != "prompt"] if info_keys is None else list(info_keys)
    seed = settings.seed
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    existing = brief.existing
    seen = {feature_name(name) for name, _ in existing}
    accepted: list[ProposedFeature] = []
    for round_index in range(settings.n_rounds):
        for attempt in range(settings.max_attempts):
            shown = _shown_features(existing, accepted, settings.max_shown, rng)
            groups = ExampleGroups(
                [texts[i] for i in _sample(positives, settings.n_examples, rng)],
                [texts[i] for i in _sample(negatives, settings.n_examples, rng)],
            )
            user = build_proposal_prompt(groups, shown, keys, settings.n_features, brief.positive_label)
            answer = client.complete(brief.system_prompt, user, temperature=settings.temperature,
                                     max_tokens=settings.max_tokens,
                                     seed=int(rng.integers(2**31 - 1)))  # fmt: skip
            new, skipped = _accept(answer, seen, round_index)
            if on_skip is not None:
                for item in skipped:
                    on_skip(item)
            accepted.extend(new)
            if new:
                break
            logger.warning("proposal round %d attempt %d gave no usable feature", round_index, attempt + 1)
    return accepted


def _check_settings(settings: ProposalSettings) -> None:
    for name, low in (("n_rounds", 0), ("n_features", 1), ("n_examples", 1), ("max_shown", 0),
                      ("max_attempts", 1)):  # fmt: skip
        value = getattr(settings, name)
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def _split_examples(
    prompts: pd.DataFrame, labels: Sequence[bool] | np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray]:
    if "prompt" not in prompts.columns:
        raise DataError(f"the prompt table needs a 'prompt' column; it has {list(prompts.columns)}")
    y = np.asarray(labels, dtype=bool)
    if y.shape != (len(prompts),):
        raise DataError(f"labels has shape {y.shape}; expected ({len(prompts)},), one per prompt")
    positives, negatives = np.flatnonzero(y), np.flatnonzero(~y)
    if not len(positives) or not len(negatives):
        raise DataError(
            f"contrastive proposal needs both groups; got {len(positives)} positive and "
            f"{len(negatives)} negative prompts"
        )
    return [str(p) for p in prompts["prompt"]], positives, negatives


def _sample(pool: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    return [int(i) for i in rng.choice(pool, size=min(k, len(pool)), replace=False)]


def _shown_features(
    existing: Sequence[tuple[str, str]], accepted: list[ProposedFeature], max_shown: int,
    rng: np.random.Generator,
) -> list[tuple[str, str]]:  # fmt: skip
    """All existing (seed) features, plus up to ``max_shown`` earlier proposals for diversity."""
    proposed = [(p.label, p.description) for p in accepted]
    if len(proposed) > max_shown:
        keep = sorted(rng.choice(len(proposed), size=max_shown, replace=False))
        proposed = [proposed[i] for i in keep]
    return [*existing, *proposed]


@dataclass(frozen=True)
class ExampleGroups:
    """The example prompts shown in one proposal round: ``positives`` (group A, the behaviour
    named ``positive_label``) and ``negatives`` (group B, not that behaviour)."""

    positives: Sequence[str]
    negatives: Sequence[str]


def build_proposal_prompt(
    examples: ExampleGroups,
    shown: Sequence[tuple[str, str]],
    info_keys: Sequence[str],
    n_features: int,
    positive_label: str = "positive",
) -> str:
    """The user message of one proposal round (examples are JSON strings, cut at 400 characters)."""
    parts = [
        "You will see two groups of INPUT prompts given to a language model (inputs only, no answers).",
        "",
        f"### Group A: the model's behaviour was '{positive_label}'",
        *(_example_line(p) for p in examples.positives),
        "",
        f"### Group B: the model's behaviour was NOT '{positive_label}'",
        *(_example_line(p) for p in examples.negatives),
    ]
    if shown:
        parts += ["", "### ALREADY DEFINED FEATURES (DO NOT REPEAT)", *(f"- {n}: {d}" for n, d in shown)]
    keys = ", ".join(repr(k) for k in info_keys) or "(none: info is an empty dict)"
    parts += [
        "",
        f"Now propose {n_features} new features, as Python functions, that separate group A from group B.",
        "Rules:",
        '- Answer with a JSON list of objects with the keys "label", "description" and "python_src".',
        "- python_src defines exactly one function: def my_feature(prompt: str, info: dict) -> float | None",
        f"- info is a dict with the keys {keys}.",
        "- Return a number (bool counts as 0/1), or None when the feature does not apply to the prompt.",
        "- Use only prompt and info. No imports; the modules math and re are already available.",
        "- No eval, exec, open, files, network, classes, global state, or names starting with '_'.",
        "- At most 25 lines per function; deterministic; fast.",
        "Return ONLY the JSON list.",
    ]
    return "\n".join(parts)


def _example_line(prompt: str) -> str:
    text = prompt if len(prompt) <= MAX_EXAMPLE_CHARS else prompt[:MAX_EXAMPLE_CHARS] + " [...]"
    return "- " + json.dumps(text, ensure_ascii=False)


# -- parsing -----------------------------------------------------------------------------------------


def parse_feature_list(text: str) -> tuple[list[dict[str, str]], list[str]]:
    """Extract ``{label, description, python_src}`` items from an LLM answer.

    Returns (items, problems): items whose fields are present and strings, and a readable note for
    everything skipped. Never raises on bad input.
    """
    problems: list[str] = []
    value = _first_json_value(text)
    if value is None:
        value = _salvage_objects(text)
        if not value:
            return [], ["no JSON list or object found in the answer"]
        problems.append(f"answer was not one valid JSON value; salvaged {len(value)} object(s)")
    if isinstance(value, dict):
        value = value.get("features", [value]) if isinstance(value.get("features"), list) else [value]
    if not isinstance(value, list):
        return [], [f"answer's JSON is a {type(value).__name__}, not a list of features"]
    items: list[dict[str, str]] = []
    for index, raw in enumerate(value):
        item, problem = _feature_item(raw)
        if item is None:
            problems.append(f"item {index}: {problem}")
        else:
            items.append(item)
    return items, problems


def _first_json_value(text: str) -> Any:
    fenced = [body for lang, body in _FENCE.findall(text) if lang.lower() in ("", "json", "jsonc")]
    for candidate in [*fenced, text]:
        for span in [candidate.strip(), *_top_level_spans(candidate)]:
            value = _loads_lenient(span)
            if isinstance(value, list | dict):
                return value
    return None


def _loads_lenient(text: str) -> Any:
    for attempt in (text, _TRAILING_COMMA.sub(r"\1", text)):
        try:
            return json.loads(attempt, strict=False)  # strict=False: raw newlines inside strings
        except ValueError:
            continue
    return None


def _top_level_spans(text: str) -> Iterator[str]:
    """Balanced top-level ``[...]``/``{...}`` spans, skipping brackets inside JSON strings.

    Stops at the first bracket that never closes: what follows is inside it (a truncated answer),
    and its complete objects are left to :func:`_salvage_objects`.
    """
    start = 0
    while True:
        begin = _next_opening(text, start)
        if begin < 0:
            return
        end = _matching_close(text, begin)
        if end < 0:
            return
        yield text[begin : end + 1]
        start = end + 1


def _next_opening(text: str, start: int) -> int:
    positions = [p for p in (text.find("[", start), text.find("{", start)) if p >= 0]
    return min(positions) if positions else -1


def _matching_close(text: str, begin: int) -> int:
    """Index of the bracket closing ``text[begin]``, or -1 if it never closes (truncated answer)."""
    depth, in_string, escaped = 0, False, False
    for i in range(begin, len(text)):
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _salvage_objects(text: str) -> list[Any]:
    """Every ``{...}`` object that parses on its own (for truncated or junk-interleaved answers)."""
    found: list[Any] = []
    start = text.find("{")
    while start >= 0:
        end = _matching_close(text, start)
        value = _loads_lenient(text[start : end + 1]) if end >= 0 else None
        if isinstance(value, dict) and ("python_src" in value or "label" in value):
            found.append(value)
            start = text.find("{", end + 1)
        else:
            start = text.find("{", start + 1)
    return found


def _feature_item(raw: Any) -> tuple[dict[str, str] | None, str]:
    if not isinstance(raw, dict):
        return None, f"not an object ({type(raw).__name__})"
    label = raw.get("label", raw.get("name"))
    source = raw.get("python_src", raw.get("code"))
    description = raw.get("description", "")
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        source = "\n".join(source)
    if not isinstance(label, str) or not label.strip():
        return None, "missing a string 'label'"
    if not isinstance(source, str) or "def " not in source:
        return None, f"{label!r} has no 'python_src' with a function definition"
    if not isinstance(description, str):
        description = ""
    item = {"label": label.strip(), "description": description.strip(), "python_src": _clean_source(source)}
    return item, ""


def _clean_source(source: str) -> str:
    match = _FENCE.search(source)
    if match:
        source = match.group(2)
    return textwrap.dedent(source).strip() + "\n"


def _accept(
    answer: str, seen: set[str], round_index: int
) -> tuple[list[ProposedFeature], list[SkippedProposal]]:
    """Parse an answer; keep valid items whose normalised label is new (``seen`` is updated)."""
    items, problems = parse_feature_list(answer)
    skipped = [SkippedProposal(round_index, None, "parse", problem) for problem in problems]
    new: list[ProposedFeature] = []
    for item in items:
        label, source = item["label"], item["python_src"]
        key = feature_name(label)
        if key in seen:
            reason = f"duplicate label: {key!r} is a seed feature or an earlier proposal"
            skipped.append(SkippedProposal(round_index, label, "duplicate", reason, source))
            continue
        try:
            validate_feature_source(source)
        except SandboxError as exc:
            skipped.append(SkippedProposal(round_index, label, "validation", str(exc), source))
            continue
        seen.add(key)
        new.append(ProposedFeature(label, item["description"], source, round_index))
    for skip in skipped:
        subject = f"{skip.label!r}: " if skip.label is not None else ""
        logger.info("proposal round %d: skipped %s%s", round_index, subject, skip.reason)
    return new, skipped
