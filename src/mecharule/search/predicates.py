"""The predicates: which groups are *strong* (split, not pruned) and which singletons are *accepted*.

Predicates (``SearchConfig.predicate``), each a function registered in :data:`~.types.PREDICATES`
here: ``predicate(slices: Slices) -> (strong, accepted)``. A new one is one more such function.
``U``/``L`` are one-sided Clopper–Pearson bounds at α_slice:

* ``"ucb"`` (reference parity): strong iff ``U(covered) ≥ τ`` OR ``U(unrelated) ≥ τ``. The same
  statistic prunes groups and accepts singletons. A unit that only flips unrelated prompts counts.
* ``"observed"``: a singleton is ACCEPTED iff its observed flip rate reaches τ on a slice (no unit
  that flips 12 % of prompts is reported because its upper bound touched 0.2), and a group is
  strong iff its observed change rate reaches τ on a slice: under monotonicity a weaker group
  holds no unit that could be accepted, so the bound's slack is not needed for pruning.
* ``"contrastive"``: PRUNING uses the covered slice only — a group is strong iff ``U(covered) ≥ τ``.
  ACCEPTANCE of a singleton needs that AND ``L(covered) − U(unrelated) ≥ contrast_margin`` (the
  Bonferroni-box lower bound on selectivity, 95 % at α_slice = 0.025; see :mod:`.stats`). The contrast
  is not used to prune because it is not monotone: a group holding a selective agonist and an
  unselective unit can have a lower contrast than the agonist alone.

Imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from mecharule.search.stats import adjusted_epsilon, cp_lower, cp_upper
from mecharule.search.types import PREDICATES, SearchConfig, SliceCounts

__all__ = ["Evaluation", "SliceEffect", "Slices", "evaluate_counts"]


@dataclass(frozen=True)
class SliceEffect:
    """Flip rate on one slice: point estimate and one-sided CP bounds at α_slice."""

    flips: int
    n: int
    rate: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Evaluation:
    """Every statistic the predicates use, for one :class:`SliceCounts`.

    ``strong`` is the pruning statistic's verdict (a group is split iff strong; on answer changes by
    default, see :class:`SearchConfig`); ``accepted`` is the
    singleton acceptance verdict (before the catastrophic check). ``max_upper`` is the reference's
    ``max_effect``: the max over non-empty slices of the CP upper bound.
    """

    covered: SliceEffect
    unrelated: SliceEffect
    tau: float
    max_upper: float
    contrast_lower: float
    strong: bool
    accepted: bool
    catastrophic: bool

    @property
    def selectivity(self) -> float:
        """Covered flip rate minus unrelated flip rate (point estimates)."""
        return self.covered.rate - self.unrelated.rate


@lru_cache(maxsize=65536)
def _slice_effect(flips: int, n: int, alpha: float) -> SliceEffect:
    """Point estimate and CP bounds of one slice (cached: counts repeat a lot)."""
    rate = flips / n if n else 0.0
    return SliceEffect(flips, n, rate, float(cp_lower(flips, n, alpha)), float(cp_upper(flips, n, alpha)))


@lru_cache(maxsize=4096)
def _effective_tau(tau: float, sizes: tuple[int, ...], n_ref: int, alpha: float, adjust: bool) -> float:
    """τ after the reference's slice-size adjustment (cached per slice sizes)."""
    return adjusted_epsilon(tau, sizes, n_ref=n_ref, alpha=alpha) if adjust else tau


@dataclass(frozen=True)
class Slices:
    """What a predicate sees of one group: flips and answer changes on each slice, the effective τ
    (after the slice-size adjustment), the contrast bound and the search's settings."""

    covered: SliceEffect
    unrelated: SliceEffect
    covered_changes: SliceEffect
    unrelated_changes: SliceEffect
    tau: float
    contrast: float
    config: SearchConfig

    @staticmethod
    def bound_reaches(effect: SliceEffect, tau: float) -> bool:
        return effect.n > 0 and effect.upper >= tau

    @property
    def flips_strong(self) -> tuple[bool, bool]:
        """(covered, unrelated): the CP upper bound of the flip rate reaches the effective τ."""
        return self.bound_reaches(self.covered, self.tau), self.bound_reaches(self.unrelated, self.tau)

    @property
    def pruning(self) -> tuple[SliceEffect, SliceEffect]:
        """The (covered, unrelated) effects groups are pruned on: answer changes or flips."""
        if self.config.prune_on == "changes":
            return self.covered_changes, self.unrelated_changes
        return self.covered, self.unrelated

    @property
    def pruning_strong(self) -> tuple[bool, bool]:
        return self.bound_reaches(self.pruning[0], self.tau), self.bound_reaches(self.pruning[1], self.tau)


@PREDICATES.register("ucb")
def _ucb(s: Slices) -> tuple[bool, bool]:
    return any(s.pruning_strong), any(s.flips_strong)


@PREDICATES.register("observed")
def _observed(s: Slices) -> tuple[bool, bool]:
    # Observed rates against τ itself (the slice-size adjustment of τ is for bounds). Under
    # monotonicity a group changes at least the answers each member flips, so a group whose
    # observed change (or flip) rate is below τ on both slices holds no unit this accepts.
    tau = s.config.tau
    accepted = any(e.n > 0 and e.rate >= tau for e in (s.covered, s.unrelated))
    return any(e.n > 0 and e.rate >= tau for e in s.pruning), accepted


@PREDICATES.register("contrastive")
def _contrastive(s: Slices) -> tuple[bool, bool]:
    return s.pruning_strong[0], s.flips_strong[0] and s.contrast >= s.config.contrast_margin


def evaluate_counts(counts: SliceCounts, config: SearchConfig) -> Evaluation:
    """Apply ``config``'s predicate to one group's counts. Empty slices (n = 0) never make a group strong."""
    alpha = config.alpha_slice
    covered = _slice_effect(counts.covered_flips, counts.covered_n, alpha)
    unrelated = _slice_effect(counts.unrelated_flips, counts.unrelated_n, alpha)
    sizes = tuple(n for n in (counts.covered_n, counts.unrelated_n) if n > 0)
    tau = _effective_tau(config.tau, sizes, config.n_ref, alpha, config.adjust_tau)
    contrast = covered.lower - unrelated.upper
    slices = Slices(
        covered,
        unrelated,
        _slice_effect(counts.covered_changes, counts.covered_n, alpha),
        _slice_effect(counts.unrelated_changes, counts.unrelated_n, alpha),
        tau,
        contrast,
        config,
    )
    strong, accepted = _predicate(config.predicate)(slices)
    uppers = [s.upper for s in (covered, unrelated) if s.n > 0]
    return Evaluation(
        covered, unrelated, tau, max(uppers, default=0.0), contrast, strong, accepted, counts.catastrophic
    )


@lru_cache(maxsize=64)
def _predicate(name: str) -> Callable[[Slices], tuple[bool, bool]]:
    return PREDICATES.get(name)
