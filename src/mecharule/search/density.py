"""When group testing pays: the expected cost of CHA on a group versus testing its units one by one.

CHA saves interventions only where strong units are sparse. With a share ``p`` of strong units placed
at random in a group of ``n``, a node of size ``s`` is strong with probability ``1 − (1 − p)^s`` and
every strong node costs its two children, so splitting a group that is already known to be strong
costs, in expectation,

    E(n, p) = 2 + Σ_{d=2}^{⌈log2 n⌉} 2^d · (1 − (1 − p)^(n / 2^(d−1)))

evaluations (its two children always, then the children of each strong node), versus ``n`` for
its singletons. :func:`expected_split_cost` computes it (an upper
estimate when the attribution order puts strong units together, as it does by default).

The search estimates ``p`` from data it already has, never from extra interventions except the
audit: from a seeded sample of singletons (the *audit*, which brute force would have evaluated
too, so they are reused, never wasted), drawn at the root and again at a later level while the
audit so far cannot tell whether halving or testing one by one is cheaper, or the groups look
denser than it says; below the root, also from the share of strong groups among the root's
groups evaluated at the last level (``f = 1 − (1 − p)^s`` solved for ``p``). A
group whose expected split cost reaches the cost of its untested singletons is *expanded*: its
units are tested one by one. So on any root CHA costs at most its singletons plus the groups it
evaluated before it expanded (see ``docs/concepts/localization.md``).
"""

from __future__ import annotations

import math

from scipy.special import betaincinv

__all__ = [
    "audit_is_decisive",
    "audit_size",
    "density_from_audit",
    "density_from_groups",
    "expected_split_cost",
    "should_expand",
]


def expected_split_cost(n: int, p: float) -> float:
    """Expected evaluations to resolve a strong group of ``n`` units by halving, at unit density ``p``."""
    if n <= 1:
        return 0.0
    p = min(max(p, 0.0), 1.0)
    total, size, width = 2.0, n / 2.0, 4
    while size > 1.0:
        total += width * (1.0 - (1.0 - p) ** size)
        size /= 2.0
        width *= 2
    return total


#: Estimates are the lower ``CAUTION`` quantile of the Jeffreys posterior: a small audit that happens
#: to draw two strong units of a sparse root must not turn the search into brute force.
CAUTION = 0.2


def _jeffreys_quantile(q: float, hits: int, n: int) -> float:
    """The ``q`` quantile of the Jeffreys posterior Beta(hits + ½, n − hits + ½) of a share.

    ``betaincinv`` is the Beta quantile itself (bit-identical to ``scipy.stats.beta.ppf`` here).
    ``scipy.stats`` is avoided: its import fails where torch is blocked (``sys.modules["torch"] =
    None``, scipy 1.17), and this module must import without torch."""
    return float(betaincinv(hits + 0.5, n - hits + 0.5, q))


def _cautious_share(hits: int, n: int) -> float:
    return _jeffreys_quantile(CAUTION, hits, n) if n > 0 else 0.0


def audit_size(n_units: int, audit: int) -> int:
    """Singletons audited per round in a root of ``n_units``: ``audit``, but at most one in four of
    the root's units (at least one), so that small roots keep their savings."""
    return min(audit, max(1, n_units // 4)) if audit else 0


def density_from_audit(n_strong: int, n_audited: int) -> float:
    """Share of strong units, from an audit of singletons (cautious: a posterior lower quantile)."""
    return _cautious_share(n_strong, n_audited)


def audit_is_decisive(n_strong: int, n_audited: int, group_size: int, group_density: float = 0.0) -> bool:
    """Would the expand-or-split decision for a group of ``group_size`` be the same at both ends of
    the audit's 20–80 % posterior interval, and do the groups not look denser than that interval's
    top? If not, more singletons should be audited."""
    low = _cautious_share(n_strong, n_audited)
    high = _jeffreys_quantile(1.0 - CAUTION, n_strong, n_audited)
    if group_density > high:
        return False
    return should_expand(group_size, group_size, low) == should_expand(group_size, group_size, high)


def density_from_groups(n_strong: int, n_groups: int, mean_size: float) -> float:
    """Unit density ``p`` that makes ``n_strong`` of ``n_groups`` random groups of ``mean_size`` strong."""
    if n_groups <= 0 or mean_size <= 0:
        return 0.0
    share = _cautious_share(n_strong, n_groups)
    return 1.0 - (1.0 - share) ** (1.0 / mean_size)


#: Halving must be expected to save at least this share of the untested singletons: the estimate is
#: rough (random placement, a small audit), and near break-even halving risks more than it saves.
MARGIN = 0.25


def should_expand(n_units: int, n_untested: int, p: float) -> bool:
    """Test a strong group's units one by one unless halving is expected to save ``MARGIN`` of them."""
    if n_units <= 2:
        return True  # two children of size 1 ARE the singletons
    return expected_split_cost(n_units, p) >= (1.0 - MARGIN) * n_untested or math.isclose(p, 1.0)
