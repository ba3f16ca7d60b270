"""The run's named random streams: every seeded draw of every stage, one table.

A stream is ``numpy.random.default_rng([seed, *salt, *extra])``: the run's one seed, the stream's
fixed salt, and, where a stage draws once per item (a problem), that item's index. Naming them in one
place keeps two stages from sharing a stream by accident and lets ``run.json`` record what each
draws (``random_streams``). The CHA search's shuffles are seeded per root inside the search
(``search.tree.root_rng``), from the same seed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from mecharule.errors import ConfigError


class Stream(NamedTuple):
    salt: tuple[int, ...]
    draws: str


STREAMS: dict[str, Stream] = {
    "measure.subsample": Stream((), "the prompts a max_prompts subsample keeps"),
    "measure.split": Stream((), "the TRAIN/TEST split, stratified by task group x label"),
    "task.shots": Stream((2024,), "the solved examples of a few-shot prompt"),
    "ablation.reference": Stream((7,), "the TRAIN rows the mean/resample ablation values come from"),
    "ablation.resample": Stream((), "the one reference prompt a resample ablation takes its values from"),
    "search.pool": Stream((5,), "the TRAIN rows of the spectral pool (slices are drawn from it)"),
    "search.slices": Stream((19,), "each problem's covered and unrelated prompts (+ its index, side)"),
    "search.suppression": Stream((11,), "the prompts of each problem's joint suppression"),
    "validation.outside": Stream((17,), "non-candidate units brute-forced, per problem (its index)"),
    "anchor.rows": Stream((13,), "the prompts of the flip table"),
    "anchor.controls": Stream((17,), "the random control units"),
    "anchor.cards": Stream((23,), "the prompts of each agonist card's activation histograms"),
}


def stream(seed: int, name: str, *extra: int) -> np.random.Generator:
    """The generator of stream ``name`` for ``seed`` (``extra``: an item index, for per-item streams)."""
    if name not in STREAMS:
        raise ConfigError(f"unknown random stream {name!r}; streams: {', '.join(STREAMS)}")
    return np.random.default_rng(list(stream_entropy(seed, name, *extra)))


def stream_entropy(seed: int, name: str, *extra: int) -> tuple[int, ...]:
    """The entropy of stream ``name`` (for functions that take a seed sequence and extend it)."""
    if name not in STREAMS:
        raise ConfigError(f"unknown random stream {name!r}; streams: {', '.join(STREAMS)}")
    return (seed, *STREAMS[name].salt, *extra)


def describe(seed: int) -> dict[str, dict[str, object]]:
    """``{name: {"entropy": [seed, *salt], "draws": ...}}``, as ``run.json`` records it."""
    return {name: {"entropy": [seed, *s.salt], "draws": s.draws} for name, s in STREAMS.items()}


__all__ = ["STREAMS", "Stream", "describe", "stream", "stream_entropy"]
