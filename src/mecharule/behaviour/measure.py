"""Behaviour measurement: greedy answers, labels, a seeded stratified split.

Work is checkpointed under ``<out>/.partial/measure-<hash>/`` so an interrupted run resumes where it
stopped; the final ``behaviour.parquet`` is written atomically. Prompts are answered in chunks of
:data:`CHUNK`, each in length order (batches of similar length, as :func:`generate_answers`). Inside
a chunk, the answers finished so far are saved at least every :data:`CHECKPOINT_SECONDS` of work as
a *part* (``chunk-<start>.part-<lo>-<hi>.parquet``: sorted positions ``[lo, hi)`` of the chunk, with
their prompt indices); a finished chunk is saved whole (``chunk-<start>.parquet``) and its parts
removed. On resume, whole chunks of the right length and parts that continue each other from
position 0 with the expected prompts are read back; anything else is deleted. Batches are the same
as in an uninterrupted run, so the answers are too.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mecharule.decoding.generation import answer_batches, length_order
from mecharule.errors import DataError
from mecharule.io.rundir import atomic_path
from mecharule.models.loading import ModelHandle
from mecharule.random_streams import stream
from mecharule.tasks.base import Task, stop_strings_of

CHUNK = 4096  # prompts per saved chunk (and per length sort)
CHECKPOINT_SECONDS = 30.0  # save the finished prompts of a chunk at least this often


def stratified_split(strata: pd.Series, test_fraction: float, seed: int) -> np.ndarray:
    """'train'/'test' per row: in every stratum a seeded ``test_fraction`` share goes to test."""
    rng = stream(seed, "measure.split")
    split = np.full(len(strata), "train", dtype=object)
    for _, idx in sorted(strata.groupby(strata, sort=True).indices.items(), key=lambda kv: str(kv[0])):
        n_test = round(test_fraction * len(idx))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        split[rng.permutation(idx)[:n_test]] = "test"
    return split


@dataclass(frozen=True)
class MeasureSettings:
    """How :func:`measure_behaviour` runs: ``batch_size`` prompts per generation batch, a
    ``test_fraction`` share of every stratum held out by the split drawn from ``seed``, and
    ``partial_dir``, the folder that keeps the finished answers of an interrupted measure (removed
    once the table is complete)."""

    batch_size: int
    test_fraction: float
    seed: int
    partial_dir: Path


@dataclass(frozen=True)
class _Chunk:
    """One chunk of prompts: ``texts``, the prompts from position ``start`` of the prompt list."""

    start: int
    texts: list[str]


def _answer_chunks(
    handle: ModelHandle,
    task: Task,
    prompts: list[str],
    settings: MeasureSettings,
    progress: Callable[[int], None] | None,
) -> list[str]:
    partial = settings.partial_dir
    partial.mkdir(parents=True, exist_ok=True)
    answers: list[str] = []
    for start in range(0, len(prompts), CHUNK):
        path = partial / f"chunk-{start:09d}.parquet"
        texts = prompts[start : start + CHUNK]
        done = _saved_chunk(path, len(texts))
        if done is None:
            done = _answer_chunk(handle, task, _Chunk(start, texts), settings, progress)
            with atomic_path(path) as tmp:
                pd.DataFrame({"answer": done}).to_parquet(tmp)
            for part in partial.glob(f"chunk-{start:09d}.part-*.parquet"):
                part.unlink()
        elif progress is not None:
            progress(len(done))
        answers.extend(done)
    return answers


def _saved_chunk(path: Path, n: int) -> list[str] | None:
    """A whole chunk saved earlier, if it holds ``n`` answers (else it is deleted)."""
    if not path.exists():
        return None
    try:
        done: list[str] = pd.read_parquet(path)["answer"].tolist()
    except (OSError, ValueError, KeyError):
        done = []
    if len(done) == n:
        return done
    path.unlink()
    return None


def _answer_chunk(
    handle: ModelHandle,
    task: Task,
    chunk: _Chunk,
    settings: MeasureSettings,
    progress: Callable[[int], None] | None,
) -> list[str]:
    """One chunk's answers: saved parts first, then the rest in length order, saving a part at least
    every ``CHECKPOINT_SECONDS``."""
    texts, start, partial = chunk.texts, chunk.start, settings.partial_dir
    _, order = length_order(handle, texts)
    answers: list[str] = [""] * len(texts)
    position = _saved_parts(partial, start, order, answers)
    if progress is not None and position:
        progress(position)
    pending: list[tuple[int, str]] = []
    saved_at = time.monotonic()
    batches = answer_batches(
        handle, texts, task.max_new_tokens, settings.batch_size, stop_strings_of(task), position
    )
    try:
        for indices, batch in batches:
            for i, answer in zip(indices, batch, strict=True):
                answers[i] = answer
                pending.append((i, answer))
            if progress is not None:
                progress(len(indices))
            if time.monotonic() - saved_at >= CHECKPOINT_SECONDS and position + len(pending) < len(texts):
                position = _save_part(partial, start, position, pending)
                pending, saved_at = [], time.monotonic()
    except KeyboardInterrupt:
        if pending:  # Ctrl-C loses only the batch in flight
            _save_part(partial, start, position, pending)
        raise
    return answers


def _saved_parts(partial: Path, start: int, order: list[int], answers: list[str]) -> int:
    """Fill ``answers`` from the chunk's saved parts; returns the sorted position they reach. The
    first part that does not continue the previous one with the expected prompts is deleted, with
    every later one."""
    position = 0
    parts = sorted(partial.glob(f"chunk-{start:09d}.part-*.parquet"))  # zero-padded: in order
    for k, path in enumerate(parts):
        frame = _read_part(path, start, position, order)
        if frame is None:
            for stale in parts[k:]:
                stale.unlink()
            break
        for i, answer in zip(frame["index"].tolist(), frame["answer"].tolist(), strict=True):
            answers[i] = answer
        position += len(frame)
    return position


def _read_part(path: Path, start: int, position: int, order: list[int]) -> pd.DataFrame | None:
    """The part at ``path`` if it covers sorted positions ``[position, end)`` with the prompts
    ``order`` puts there, else None."""
    try:
        end = int(path.name.removesuffix(".parquet").rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None
    if path.name != _part_name(start, position, end) or not position < end <= len(order):
        return None
    try:
        frame = pd.read_parquet(path)
        matches = frame["index"].tolist() == order[position:end]
    except (OSError, ValueError, KeyError):
        return None
    return frame if matches else None


def _save_part(partial: Path, start: int, position: int, pending: list[tuple[int, str]]) -> int:
    end = position + len(pending)
    frame = pd.DataFrame({"index": [i for i, _ in pending], "answer": [a for _, a in pending]})
    with atomic_path(partial / _part_name(start, position, end)) as tmp:
        frame.to_parquet(tmp)
    return end


def _part_name(start: int, lo: int, hi: int) -> str:
    return f"chunk-{start:09d}.part-{lo:06d}-{hi:06d}.parquet"


def measure_behaviour(
    handle: ModelHandle,
    task: Task,
    prompts: pd.DataFrame,
    settings: MeasureSettings,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """``prompt, answer, parsed, parsed_ok, label, split`` + ``question`` (the unformatted prompt, when
    the table has it) + the task's metadata columns, one row per prompt. ``answer`` is the raw
    decoded text; ``parsed`` the value the task read from it (None when it read none). ``progress``
    is called with the number of prompts answered since its last call."""
    if len(prompts) == 0:
        raise DataError(f"task {task.name!r} produced no prompts; check its options")
    texts = prompts["prompt"].tolist()
    answers = _answer_chunks(handle, task, texts, settings, progress)
    labels = np.asarray(task.score(prompts, answers), dtype=bool)
    parsed = parsed_answers(task, answers)
    table = pd.DataFrame(
        {
            "prompt": texts,
            "answer": answers,
            "parsed": pd.Series(parsed, dtype="string"),
            "parsed_ok": np.array([p is not None for p in parsed], dtype=bool),
            "label": labels,
        }
    )
    if "question" in prompts.columns:
        table["question"] = prompts["question"].astype(str).to_numpy()
    for column in task.metadata_columns:
        table[column] = prompts[column].to_numpy()
    strata = table["label"].astype(str)
    if task.group_column:
        strata = table[task.group_column].astype(str) + "|" + strata
    table["split"] = stratified_split(strata, settings.test_fraction, settings.seed)
    partial_dir = settings.partial_dir
    shutil.rmtree(partial_dir, ignore_errors=True)
    if partial_dir.parent.name == ".partial" and not any(partial_dir.parent.iterdir()):
        partial_dir.parent.rmdir()
    return table


def parsed_answers(task: Task, answers: list[str]) -> list[str | None]:
    """What the task read from each answer; tasks without ``parse_answers`` read the answer itself."""
    parse = getattr(task, "parse_answers", None)
    if parse is None:
        return [a.strip() for a in answers]
    return list(parse(answers))


def accuracy_summary(table: pd.DataFrame, group_column: str | None) -> dict[str, object]:
    summary: dict[str, object] = {
        "n_prompts": len(table),
        "positive_rate": round(float(table["label"].mean()), 4),
    }
    if "parsed_ok" in table.columns:
        summary["unparsed"] = int((~table["parsed_ok"].astype(bool)).sum())
    if group_column:
        summary["positive_rate_by_group"] = {
            str(k): round(float(v), 4) for k, v in table.groupby(group_column)["label"].mean().items()
        }
    return summary
