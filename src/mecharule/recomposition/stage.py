"""The recompose stage: each searched problem's agonists ablated alone, in pairs, all together and
in greedy sets, on the problem's own prompts → ``recomposition.json``.

The problems are rebuilt as localization built them (same slices, same engines, same baselines);
the sets run through the configured executor. With a journal, each set's per-prompt flips are kept
as its piece finishes, so a killed run resumes without engine work for the sets it finished.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from mecharule.context import StageContext
from mecharule.executor import BatchResult, Executor, GroupBatch
from mecharule.io.journal import Journal
from mecharule.io.rundir import read_json, write_json
from mecharule.localization.oracle import ProblemSlices, groups_per_piece
from mecharule.models.sites import Site
from mecharule.recomposition.analysis import RecompositionSettings, recompose

OUTPUT = "recomposition.json"


class ExecutedFlips:
    """A :class:`~mecharule.recomposition.FlipOracle` over the problems' engines: groups run in
    pieces by ``executor``; each group's flipped prompts are journaled (``recompose|...``)."""

    def __init__(
        self, problems: Mapping[str, ProblemSlices], executor: Executor, journal: Journal | None
    ) -> None:
        self.problems, self.executor, self.journal = problems, executor, journal
        self.replayed = 0

    def flips(self, key: str, groups: Sequence[Sequence[Site]]) -> np.ndarray:
        n_prompts = len(self.problems[key].is_covered)
        out: list[np.ndarray | None] = [self._replay(key, group, n_prompts) for group in groups]
        todo = [i for i, row in enumerate(out) if row is None]
        engine = self.problems[key].engine
        size = groups_per_piece(engine)
        pieces = [todo[start : start + size] for start in range(0, len(todo), size)]

        def finished(index: int, result: BatchResult) -> None:
            flipped = result.effects(engine.baseline_labels)[0]
            for i, row in zip(pieces[index], flipped, strict=True):
                out[i] = np.asarray(row, dtype=bool)
                if self.journal is not None:
                    self.journal.put(_journal_key(key, groups[i]), np.flatnonzero(row).tolist())

        batches = [GroupBatch.of(key, [list(groups[i]) for i in piece]) for piece in pieces]
        self.executor.run(batches, finished)
        return np.stack([row for row in out if row is not None]) if groups else np.zeros((0, n_prompts), bool)

    def _replay(self, key: str, group: Sequence[Site], n_prompts: int) -> np.ndarray | None:
        if self.journal is None:
            return None
        value = self.journal.get(_journal_key(key, group))
        if not isinstance(value, list) or not all(isinstance(v, int) and 0 <= v < n_prompts for v in value):
            return None
        self.replayed += 1
        row = np.zeros(n_prompts, dtype=bool)
        row[value] = True
        return row


def _journal_key(key: str, group: Sequence[Site]) -> str:
    names = "\n".join(sorted(str(u) for u in group))
    return f"recompose|{key}|{len(group)}|{hashlib.blake2b(names.encode(), digest_size=12).hexdigest()}"


def settings_of(ctx: StageContext) -> RecompositionSettings:
    cfg = ctx.config.recompose
    return RecompositionSettings(
        pair_units=cfg.pair_units, shares=tuple(cfg.shares), max_units=cfg.max_units, alpha=cfg.alpha
    )


def run_recompose(ctx: StageContext) -> list[str]:
    """The stage body: ``recomposition.json`` for every problem localization searched."""
    from mecharule.localization.runner import executing
    from mecharule.localization.stage import prepare
    from mecharule.progress import settle_total

    summary = read_json(ctx.path / "localization" / "summary.json")
    setup = prepare(ctx)
    problems = [
        (
            p["key"],
            setup.problems[p["key"]].is_covered,
            [Site.parse(a["unit"]) for a in p.get("agonists") or []],
        )
        for p in summary.get("problems", [])
        if not p.get("skipped") and p["key"] in setup.problems
    ]
    settings = settings_of(ctx)
    expected = sum(expected_evaluations(len(units), settings) for _, _, units in problems)
    label = "recompose (group evaluations: alone, joint, pairs, greedy sets)"
    with ctx.progress(label, expected) as tick, executing(ctx, setup) as executor:
        oracle = ExecutedFlips(setup.problems, executor, ctx.journal)
        result = recompose(oracle, problems, settings, progress=_growing(tick, expected))
        settle_total(tick, result["evaluations"])  # the expected count was an upper bound
    rules = {
        p["key"]: {"rule_id": p["rule_id"], "rule": p.get("rule", ""), "regime": p["regime"]}
        for p in summary["problems"]
    }
    for key, entry in result["problems"].items():
        entry.update(rules.get(key, {}))
    write_json(ctx.path / OUTPUT, result)
    return [OUTPUT]


def expected_evaluations(n_agonists: int, settings: RecompositionSettings) -> int:
    """An upper bound of the groups a problem needs: singles and joint, pairs, greedy steps."""
    if n_agonists == 0:
        return 0
    top = min(n_agonists, settings.pair_units)
    greedy = min(n_agonists, settings.max_units)
    return n_agonists + 1 + top * (top - 1) // 2 + greedy * (greedy - 1) // 2


def _growing(tick: Callable[[int], None], expected: int) -> Callable[[int], None]:
    from mecharule.progress import grow_total

    done = [0]

    def update(n: int) -> None:
        done[0] += n
        grow_total(tick, max(expected, done[0]))
        tick(n)

    return update


__all__ = ["OUTPUT", "ExecutedFlips", "expected_evaluations", "run_recompose", "settings_of"]
