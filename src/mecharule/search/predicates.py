"""The predicates: which groups are *strong* (split, not pruned) and which singletons are *accepted*.

Predicates (``SearchConfig.predicate``); ``U``/``L`` are one-sided Clopper–Pearson bounds at α_slice:

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

from dataclasses import dataclass
from functools import lru_cache

from mecharule.search.stats import adjusted_epsilon, cp_lower, cp_upper
from mecharule.search.types import SearchConfig, SliceCounts

__all__ = ["Evaluation", "SliceEffect", "evaluate_counts"]


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


def evaluate_counts(counts: SliceCounts, config: SearchConfig) -> Evaluation:
    """Apply ``config``'s predicate to one group's counts. Empty slices (n = 0) never make a group strong."""
    covered = _slice_effect(counts.covered_flips, counts.covered_n, config.alpha_slice)
    unrelated = _slice_effect(counts.unrelated_flips, counts.unrelated_n, config.alpha_slice)
    sizes = tuple(n for n in (counts.covered_n, counts.unrelated_n) if n > 0)
    tau = _effective_tau(config.tau, sizes, config.n_ref, config.alpha_slice, config.adjust_tau)
    covered_strong = covered.n > 0 and covered.upper >= tau
    unrelated_strong = unrelated.n > 0 and unrelated.upper >= tau
    contrast = covered.lower - unrelated.upper
    changed_cov = _slice_effect(counts.covered_changes, counts.covered_n, config.alpha_slice)
    changed_unr = _slice_effect(counts.unrelated_changes, counts.unrelated_n, config.alpha_slice)
    if config.prune_on == "changes":
        prune_cov = changed_cov.n > 0 and changed_cov.upper >= tau
        prune_unr = changed_unr.n > 0 and changed_unr.upper >= tau
    else:
        prune_cov, prune_unr = covered_strong, unrelated_strong
    if config.predicate == "ucb":
        accepted = covered_strong or unrelated_strong
        strong = prune_cov or prune_unr
    elif config.predicate == "observed":
        # Observed rates against τ itself (the slice-size adjustment of τ is for bounds). Under
        # monotonicity a group changes at least the answers each member flips, so a group whose
        # observed change (or flip) rate is below τ on both slices holds no unit this accepts.
        accepted = any(s.n > 0 and s.rate >= config.tau for s in (covered, unrelated))
        pruning = (changed_cov, changed_unr) if config.prune_on == "changes" else (covered, unrelated)
        strong = any(s.n > 0 and s.rate >= config.tau for s in pruning)
    else:
        strong = prune_cov
        accepted = covered_strong and contrast >= config.contrast_margin
    uppers = [s.upper for s in (covered, unrelated) if s.n > 0]
    return Evaluation(
        covered, unrelated, tau, max(uppers, default=0.0), contrast, strong, accepted, counts.catastrophic
    )
