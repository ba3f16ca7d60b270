"""Cost estimates printed before (and early in) long stages: forward passes and expected time from a
short calibration on this machine, so a user can stop a run that would take hours."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

Notify = Callable[[str], None]


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def calibrating_tick(
    tick: Callable[[int], None], total: int, what: str, notify: Notify
) -> Callable[[int], None]:
    """A progress callback that prints the extrapolated time of the stage once, timed on the second
    batch (the first one pays one-off warm-up: stop-token tables, allocator, kernels)."""
    state = {"updates": 0, "done": 0, "mark": time.perf_counter()}

    def update(n: int) -> None:
        tick(n)
        now = time.perf_counter()
        state["updates"] += 1
        state["done"] += n
        if state["updates"] == 2 and state["done"] < total:
            per_item = (now - state["mark"]) / max(1, n)
            notify(
                f"{what}: {n:,} items in {now - state['mark']:.1f} s "
                f"→ about {duration(per_item * (total - state['done']))} for the remaining "
                f"{total - state['done']:,}"
            )
        state["mark"] = now

    return update


def group_testing_estimate(
    roots: Sequence[Sequence[int]], seconds_per_group: float, n_agonists_guess: int = 8, audit: int = 0
) -> str:
    """One line: what brute force would cost and CHA's Θ(k·log2(N/k) + k) scale for a guessed k
    (:func:`expected_cha_evaluations`)."""
    brute = sum(sum(sizes) for sizes in roots)
    cha = expected_cha_evaluations(roots, n_agonists_guess, audit)
    return (
        f"{len(roots)} problem(s), {brute:,} candidate units in all; one group evaluation ≈ "
        f"{seconds_per_group:.2f} s → brute force {brute:,} evaluations "
        f"≈ {duration(brute * seconds_per_group)}; "
        f"CHA with ~{n_agonists_guess} agonists per problem ≈ {cha:,.0f} evaluations "
        f"≈ {duration(cha * seconds_per_group)} (more when agonists are dense)"
    )


def expected_cha_evaluations(
    roots: Sequence[Sequence[int]], n_agonists_guess: int = 8, audit: int = 0
) -> float:
    """CHA's expected group evaluations for a guessed k agonists per problem.

    ``roots``: per problem, the candidate count of each root (layer). A problem's k is spread over its
    roots by size; a root holds its audit, and one no larger than the audit is tested unit by unit.
    """
    from mecharule.search.density import audit_size  # scipy: not at the pipeline's start-up

    cha = 0.0
    for sizes in roots:
        total = sum(sizes)
        for n in sizes:
            root_audit = audit_size(n, audit)
            if root_audit and n <= root_audit + 1:
                cha += n
                continue
            k = n_agonists_guess * n / total if total else 0.0
            halving = 2 * k * max(1.0, math.log2(n / k)) + k if k >= 1 else 2 * k + 1
            cha += min(n, 1 + root_audit + halving)
    return cha
