"""HANS-style NLI data: a loader for the real HANS file and an offline generator of our own.

**Real HANS** (McCoy et al. 2019): :func:`load_hans_file` reads the tab-separated file with a header
(``gold_label, sentence1_binary_parse, ..., sentence1, sentence2, pairID, heuristic, subcase,
template``); only ``gold_label, sentence1, sentence2, pairID, heuristic, subcase, template`` are
required, the parse columns are ignored. Rows with gold ``-`` are dropped; ``entailment`` → ``E``,
``non-entailment`` → ``N``.

**Generator** (:func:`generate_hans`): templates and vocabulary written for this project, in the
spirit of HANS but much smaller, so a tiny character-level model can learn the language:
46 words, premises of at most 9 words. Each *subcase* is a declarative row of :data:`SUBCASES`
(heuristic, name, gold label, one or more templates). Template fields are filled from word classes
(``n`` nouns, ``vt`` transitive verbs, ``vz`` verbs that may drop their object, ``vi`` intransitive
verbs, ``adj``, ``prep``); fields of one class in one template take distinct words (``{n1}`` ≠
``{n2}``). Every subcase is enumerated exhaustively, so sampling is without replacement and
deterministic for a seed.

Heuristics (HANS names) and the ``none`` control:

* ``lexical_overlap`` – every hypothesis word occurs in the premise, the order differs;
* ``subsequence`` – the hypothesis is a contiguous run of premise words;
* ``constituent`` – the hypothesis is a full clause inside the premise;
* ``none`` – controls with partial or no overlap (unrelated hypothesis → N, "someone ..." → E) and
  negation with ``never``, so that overlap and negation vary independently of the heuristics.

Prompt: ``P: {premise}\\nH: {hypothesis}\\nA:`` (optionally preceded by an instruction line, see
:func:`format_nli_prompt`); the target answer is ``" E"`` or ``" N"``.
"""

from __future__ import annotations

import csv
import itertools
import string
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from mecharule.errors import ConfigError, DataError

HEURISTICS = ("lexical_overlap", "subsequence", "constituent")
CONTROL = "none"
LABELS = ("E", "N")

#: The reference's instruction line (used when the task option ``instruction=True``).
REFERENCE_INSTRUCTION = "Decide whether H must be true given P. Output only E or N."

HANS_REQUIRED_COLUMNS = ("gold_label", "sentence1", "sentence2", "pairID", "heuristic", "subcase", "template")
_GOLD_TO_LABEL = {"entailment": "E", "non-entailment": "N"}

WORD_CLASSES: dict[str, tuple[str, ...]] = {
    "n": ("cook", "pilot", "nurse", "clerk", "poet", "baker", "guard", "tailor"),
    "vt": ("helped", "called", "paid", "thanked", "visited", "praised"),
    "vz": ("helped", "called", "paid", "visited"),  # transitive verbs that also read well without object
    "vi": ("slept", "waited", "laughed", "smiled", "left"),
    "adj": ("old", "tall", "young"),
    "prep": ("near", "behind", "beside"),
}


@dataclass(frozen=True)
class Subcase:
    """One generator subcase: every template shares heuristic, name and gold label."""

    heuristic: str
    name: str
    label: str
    templates: tuple[tuple[str, str, str], ...]  # (template name, premise format, hypothesis format)


def _sub(heuristic: str, name: str, label: str, *templates: tuple[str, str, str]) -> Subcase:
    return Subcase(heuristic, name, label, templates)


# fmt: off
SUBCASES: tuple[Subcase, ...] = (
    # lexical overlap: all hypothesis words are in the premise, in another order
    _sub("lexical_overlap", "ln_subject_object_swap", "N",
         ("swap", "the {n1} {vt1} the {n2}", "the {n2} {vt1} the {n1}")),
    _sub("lexical_overlap", "ln_passive", "N",
         ("passive", "the {n1} was {vt1} by the {n2}", "the {n1} {vt1} the {n2}")),
    _sub("lexical_overlap", "ln_conjunction", "N",
         ("conj_subject", "the {n1} and the {n2} {vt1} the {n3}", "the {n3} {vt1} the {n2}")),
    _sub("lexical_overlap", "ln_preposition", "N",
         ("pp_subject", "the {n1} {prep1} the {n2} {vt1} the {n3}", "the {n1} {vt1} the {n2}")),
    _sub("lexical_overlap", "ln_relative_clause", "N",
         ("relative", "the {n1} who the {n2} {vt1} {vi1}", "the {n1} {vt1} the {n2}")),
    _sub("lexical_overlap", "le_passive", "E",
         ("passive", "the {n1} was {vt1} by the {n2}", "the {n2} {vt1} the {n1}")),
    _sub("lexical_overlap", "le_conjunction", "E",
         ("conj_reorder", "the {n1} and the {n2} {vt1} the {n3}", "the {n2} and the {n1} {vt1} the {n3}")),
    _sub("lexical_overlap", "le_relative_clause", "E",
         ("relative", "the {n1} who the {n2} {vt1} {vi1}", "the {n2} {vt1} the {n1}")),
    # subsequence: the hypothesis is a contiguous run of premise words
    _sub("subsequence", "sn_np_s", "N",
         ("knew", "the {n1} knew the {n2} {vi1}", "the {n1} knew the {n2}"),
         ("forgot", "the {n1} forgot the {n2} {vi1}", "the {n1} forgot the {n2}")),
    _sub("subsequence", "sn_pp_on_subject", "N",
         ("pp", "the {n1} {prep1} the {n2} {vi1}", "the {n2} {vi1}")),
    _sub("subsequence", "sn_relative_clause_on_subject", "N",
         ("relative", "the {n1} who {vt1} the {n2} {vi1}", "the {n2} {vi1}")),
    _sub("subsequence", "sn_np_z", "N",
         ("since", "since the {n1} {vz1} the {n2} {vi1}", "the {n1} {vz1} the {n2}")),
    _sub("subsequence", "se_conjunction", "E",
         ("conj", "the {n1} and the {n2} {vi1}", "the {n2} {vi1}")),
    _sub("subsequence", "se_adjective", "E",
         ("adj", "the {adj1} {n1} {vt1} the {n2}", "the {n1} {vt1} the {n2}")),
    _sub("subsequence", "se_pp_on_object", "E",
         ("pp", "the {n1} {vt1} the {n2} {prep1} the {n3}", "the {n1} {vt1} the {n2}")),
    _sub("subsequence", "se_relative_clause_on_object", "E",
         ("relative", "the {n1} {vt1} the {n2} who {vi1}", "the {n1} {vt1} the {n2}")),
    # constituent: the hypothesis is a whole clause of the premise
    _sub("constituent", "cn_embedded_under_if", "N",
         ("if", "if the {n1} {vi1}, the {n2} {vi2}", "the {n1} {vi1}"),
         ("unless", "unless the {n1} {vi1}, the {n2} {vi2}", "the {n1} {vi1}")),
    _sub("constituent", "cn_adverb", "N",
         ("probably", "probably the {n1} {vi1}", "the {n1} {vi1}"),
         ("maybe", "maybe the {n1} {vt1} the {n2}", "the {n1} {vt1} the {n2}")),
    _sub("constituent", "cn_embedded_under_verb", "N",
         ("hoped", "the {n1} hoped that the {n2} {vi1}", "the {n2} {vi1}"),
         ("thought", "the {n1} thought that the {n2} {vi1}", "the {n2} {vi1}")),
    _sub("constituent", "cn_disjunction", "N",
         ("or", "the {n1} {vi1} or the {n2} {vi2}", "the {n1} {vi1}")),
    _sub("constituent", "ce_embedded_under_since", "E",
         ("since", "since the {n1} {vi1}, the {n2} {vi2}", "the {n1} {vi1}"),
         ("because", "because the {n1} {vi1}, the {n2} {vi2}", "the {n1} {vi1}")),
    _sub("constituent", "ce_adverb", "E",
         ("clearly", "clearly the {n1} {vi1}", "the {n1} {vi1}"),
         ("certainly", "certainly the {n1} {vt1} the {n2}", "the {n1} {vt1} the {n2}")),
    _sub("constituent", "ce_embedded_under_verb", "E",
         ("knew", "the {n1} knew that the {n2} {vi1}", "the {n2} {vi1}"),
         ("forgot", "the {n1} forgot that the {n2} {vi1}", "the {n2} {vi1}")),
    _sub("constituent", "ce_conjunction", "E",
         ("and", "the {n1} {vi1} and the {n2} {vi2}", "the {n2} {vi2}")),
    # controls: partial or no overlap, negation
    _sub(CONTROL, "ctrl_unrelated", "N",
         ("unrelated", "the {n1} {vt1} the {n2}", "the {n3} {vi1}")),
    _sub(CONTROL, "ctrl_other_object", "N",
         ("other_object", "the {n1} {vt1} the {n2}", "the {n1} {vt1} the {n3}")),
    _sub(CONTROL, "ctrl_other_verb", "N",
         ("other_verb", "the {n1} {vi1}", "the {n1} {vi2}")),
    _sub(CONTROL, "ctrl_never_in_premise", "N",
         ("never_p", "the {n1} never {vi1}", "the {n1} {vi1}")),
    _sub(CONTROL, "ctrl_never_in_hypothesis", "N",
         ("never_h", "the {n1} {vi1}", "the {n1} never {vi1}")),
    _sub(CONTROL, "ctrl_someone_subject", "E",
         ("someone_tr", "the {n1} {vt1} the {n2}", "someone {vt1} the {n2}"),
         ("someone_conj", "the {n1} and the {n2} {vi1}", "someone {vi1}")),
    _sub(CONTROL, "ctrl_short_passive", "E",
         ("short_passive", "the {n1} {vt1} the {n2}", "the {n2} was {vt1}")),
    _sub(CONTROL, "ctrl_someone_object", "E",
         ("someone_obj", "the {n1} {vt1} the {n2}", "the {n1} {vt1} someone")),
    _sub(CONTROL, "ctrl_never_kept", "E",
         ("never_adj", "the {adj1} {n1} never {vi1}", "the {n1} never {vi1}")),
)
# fmt: on
SUBCASES_BY_NAME = {s.name: s for s in SUBCASES}

NLI_COLUMNS = ("premise", "hypothesis", "expected_label", "heuristic", "subcase", "template", "pair_id")


def format_nli_prompt(premise: str, hypothesis: str, instruction: str | None = None) -> str:
    """``P: {premise}\\nH: {hypothesis}\\nA:``, optionally after an instruction line."""
    body = f"P: {premise}\nH: {hypothesis}\nA:"
    return f"{instruction}\n{body}" if instruction else body


def target_answer(label: str) -> str:
    """The answer a model should generate after ``A:`` (``" E"`` / ``" N"``)."""
    return f" {label}"


# ---------------------------------------------------------------------------------------------------
# Real HANS files


def load_hans_file(path: str | Path) -> pd.DataFrame:
    """Read a real HANS ``.txt`` file into the :data:`NLI_COLUMNS` table (gold ``-`` rows dropped)."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"HANS file {str(path)!r} {what}; pass the path of heuristics_*_set.txt")
    try:
        raw = pd.read_csv(
            path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE, on_bad_lines="error"
        )
    except pd.errors.EmptyDataError:
        raise DataError(
            f"HANS file {str(path)!r} is empty; expected a tab-separated file with a header"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"HANS file {str(path)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}: binary or "
            "damaged?); pass the tab-separated heuristics_*_set.txt"
        ) from exc
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise DataError(f"HANS file {str(path)!r} is not valid tab-separated text: {detail}") from exc
    except OSError as exc:
        raise DataError(f"cannot read HANS file {str(path)!r}: {exc.strerror or exc}") from exc
    missing = [c for c in HANS_REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(
            f"HANS file {str(path)!r} lacks columns {missing}; found {list(raw.columns)}; "
            f"a HANS file has a tab-separated header with {list(HANS_REQUIRED_COLUMNS)} among others"
        )
    raw = raw[raw["gold_label"].str.strip() != "-"]
    gold = raw["gold_label"].str.strip()
    unknown = sorted(set(gold) - set(_GOLD_TO_LABEL))
    if unknown:
        raise DataError(
            f"HANS file {str(path)!r} has gold labels {unknown}; allowed: entailment, non-entailment, '-'"
        )
    if raw.empty:
        raise DataError(
            f"HANS file {str(path)!r} has no rows with a gold label (rows labelled '-' are dropped); "
            "add rows labelled entailment or non-entailment"
        )
    table = pd.DataFrame(
        {
            "premise": raw["sentence1"].str.strip(),
            "hypothesis": raw["sentence2"].str.strip(),
            "expected_label": gold.map(_GOLD_TO_LABEL),
            "heuristic": raw["heuristic"].str.strip(),
            "subcase": raw["subcase"].str.strip(),
            "template": raw["template"].str.strip(),
            "pair_id": raw["pairID"].str.strip(),
        }
    )
    return table.reset_index(drop=True)


def sample_balanced(table: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` rows, half entailed (the odd one is N), drawn without replacement and shuffled."""
    rng = np.random.default_rng(seed)
    wanted = {"E": n // 2, "N": n - n // 2}
    parts = []
    for label, count in wanted.items():
        pool = np.flatnonzero(table["expected_label"].to_numpy() == label)
        if len(pool) < count:
            raise DataError(
                f"n_examples={n} needs {count} rows labelled {label} but the data has {len(pool)}; "
                "lower n_examples or pass n_examples=None to use every row"
            )
        parts.append(rng.choice(pool, size=count, replace=False))
    order = rng.permutation(np.concatenate(parts))
    return table.iloc[order].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------
# Generator


def _fields(fmt: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(fmt) if name]


@cache
def enumerate_subcase(name: str) -> tuple[tuple[str, str, str], ...]:
    """Every distinct (premise, hypothesis, template) of one subcase, in a fixed order."""
    subcase = SUBCASES_BY_NAME[name]
    items: dict[tuple[str, str], str] = {}
    for template, premise_fmt, hypothesis_fmt in subcase.templates:
        fields = sorted(set(_fields(premise_fmt)) | set(_fields(hypothesis_fmt)))
        by_class: dict[str, list[str]] = {}
        for field in fields:
            by_class.setdefault(field.rstrip("0123456789"), []).append(field)
        per_class = [
            [
                dict(zip(names, words, strict=True))
                for words in itertools.permutations(WORD_CLASSES[c], len(names))
            ]
            for c, names in sorted(by_class.items())
        ]
        for combo in itertools.product(*per_class):
            values = {k: v for part in combo for k, v in part.items()}
            key = (premise_fmt.format(**values), hypothesis_fmt.format(**values))
            items.setdefault(key, f"{subcase.name}/{template}")
    return tuple((p, h, t) for (p, h), t in items.items())


def _allocate(total: int, capacities: Sequence[int]) -> list[int]:
    """Split ``total`` as evenly as possible over bins without exceeding any capacity."""
    quotas = [0] * len(capacities)
    open_bins = [i for i, c in enumerate(capacities) if c > 0]
    left = total
    while left > 0 and open_bins:
        share, extra = divmod(left, len(open_bins))
        for rank, i in enumerate(open_bins):
            quotas[i] += min(share + (rank < extra), capacities[i] - quotas[i])
        left = total - sum(quotas)
        open_bins = [i for i in open_bins if quotas[i] < capacities[i]]
    if left > 0:
        raise ConfigError(f"asked for {total} items but the generator can only make {sum(capacities)}")
    return quotas


def _subcase_quotas(n: int, control_fraction: float) -> dict[str, int]:
    quotas: dict[str, int] = {}
    for label, half in (("E", n // 2), ("N", n - n // 2)):
        n_control = round(half * control_fraction)
        groups = [(CONTROL, n_control)] if control_fraction > 0 else []
        heuristic_split = _allocate(half - n_control, [10**9] * len(HEURISTICS))
        groups += list(zip(HEURISTICS, heuristic_split, strict=True))
        for heuristic, count in groups:
            members = [s.name for s in SUBCASES if s.heuristic == heuristic and s.label == label]
            capacities = [len(enumerate_subcase(m)) for m in members]
            quotas.update(zip(members, _allocate(count, capacities), strict=True))
    return quotas


def generate_hans(n: int = 2000, seed: int = 0, control_fraction: float = 0.2) -> pd.DataFrame:
    """A label-balanced, shuffled HANS-style table of ``n`` distinct pairs (:data:`NLI_COLUMNS`).

    Half the rows are entailed. Within a label, ``control_fraction`` of the rows are ``none``
    controls; the rest is split evenly over the three heuristics and, within one, over its subcases
    (a subcase with fewer distinct items than its share passes the excess to its siblings).
    """
    if n < 2:
        raise ConfigError(f"n={n}: need at least 2 examples (one per label)")
    if not 0.0 <= control_fraction < 1.0:
        raise ConfigError(f"control_fraction={control_fraction}: must be in [0, 1)")
    rng = np.random.default_rng(seed)
    rows = []
    for name, count in _subcase_quotas(n, control_fraction).items():
        items = enumerate_subcase(name)
        subcase = SUBCASES_BY_NAME[name]
        for index in sorted(rng.choice(len(items), size=count, replace=False)):
            premise, hypothesis, template = items[index]
            rows.append((premise, hypothesis, subcase.label, subcase.heuristic, name, template))
    table = pd.DataFrame(rows, columns=list(NLI_COLUMNS[:-1]))
    table = table.iloc[rng.permutation(len(table))].reset_index(drop=True)
    table["pair_id"] = [f"gen{i}" for i in range(len(table))]
    return table


def training_examples(
    seed: int,
    n: int,
    bias: float = 0.9,
    *,
    heuristic_share: float = 0.5,
    instruction: str | None = None,
) -> list[tuple[str, str]]:
    """Biased training pairs ``(prompt, target_answer)`` for an NLI model organism.

    A row is a heuristic case (full lexical overlap: lexical_overlap, subsequence or constituent)
    with probability ``heuristic_share``, else a ``none`` control. Heuristic cases are entailed with
    probability ``bias``; controls are *not* entailed with probability ``bias``. With the default
    ``bias=0.9`` overlap predicts entailment 90 % of the time, so a model trained on it tends to
    answer E on the rare non-entailed high-overlap cases: exactly the HANS failure. Labels are
    balanced overall (for ``heuristic_share=0.5``). Items are drawn with replacement; they may
    coincide with evaluation prompts of :func:`generate_hans` (same language, by design).
    """
    if not 0.0 <= bias <= 1.0:
        raise ConfigError(f"bias={bias}: must be a probability in [0, 1]")
    if not 0.0 <= heuristic_share <= 1.0:
        raise ConfigError(f"heuristic_share={heuristic_share}: must be a probability in [0, 1]")
    if n < 1:
        raise ConfigError(f"n={n}: must be >= 1")
    rng = np.random.default_rng(seed)
    pools: dict[tuple[bool, str], list[str]] = {}
    for s in SUBCASES:
        pools.setdefault((s.heuristic != CONTROL, s.label), []).append(s.name)
    out = []
    for _ in range(n):
        is_heuristic = bool(rng.random() < heuristic_share)
        agrees = bool(rng.random() < bias)
        label = ("E" if agrees else "N") if is_heuristic else ("N" if agrees else "E")
        members = pools[(is_heuristic, label)]
        items = enumerate_subcase(members[int(rng.integers(len(members)))])
        premise, hypothesis, _ = items[int(rng.integers(len(items)))]
        out.append((format_nli_prompt(premise, hypothesis, instruction), target_answer(label)))
    return out


def vocabulary() -> list[str]:
    """Every word the generator can produce, sorted."""
    words: set[str] = set()
    for subcase in SUBCASES:
        for premise, hypothesis, _ in enumerate_subcase(subcase.name):
            words.update(f"{premise} {hypothesis}".replace(",", "").split())
    return sorted(words)
