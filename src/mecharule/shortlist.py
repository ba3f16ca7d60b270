"""How many candidates a ``top_m`` setting keeps (torch-free: the config validates with it)."""

from __future__ import annotations

import math

from mecharule.errors import ConfigError

TopM = int | str


def candidate_count(top_m: TopM | float, n_units: int) -> int:
    """How many of ``n_units`` a ``top_m`` setting keeps: a count, or a percentage such as ``"50%"``."""
    if isinstance(top_m, float) and top_m.is_integer() and top_m > 1:
        top_m = int(top_m)  # a count written as 128.0 (JSON of older versions): unambiguous
    if isinstance(top_m, bool) or not isinstance(top_m, (int, str)):
        raise ConfigError(
            f"top_m={top_m!r}: give a count of units (an integer, e.g. 128) or a percentage of all "
            "units as a string (e.g. '50%'); a bare fraction such as 0.5 or 1.0 is ambiguous"
        )
    if isinstance(top_m, str):
        text = top_m.strip()
        try:
            share = float(text[:-1]) if text.endswith("%") else float("nan")
        except ValueError:
            share = float("nan")
        if not 0 < share <= 100:
            raise ConfigError(f"top_m={top_m!r}: a percentage must look like '50%' and lie in (0%, 100%]")
        return max(1, math.ceil(share / 100 * n_units - 1e-9))
    if top_m < 1:
        raise ConfigError(f"top_m={top_m!r}: a count must be >= 1")
    return top_m


__all__ = ["TopM", "candidate_count"]
