"""Sites: where a unit lives. Canonical text form ``L{layer}.{kind}[{index}]``, e.g. ``L1.mlp[203]``.

Unit kinds (DESIGN.md §4):

* ``mlp``: one hidden MLP neuron = one input coordinate of the MLP down-projection (d_mlp per layer);
* ``mlp_out``: one coordinate of the MLP's output in the residual stream (d_model per layer), the
  reference implementation's unit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

from mecharule.errors import ConfigError

UnitKind = Literal["mlp", "mlp_out"]
UNIT_KINDS: tuple[UnitKind, ...] = ("mlp", "mlp_out")
_SITE = re.compile(r"^L(\d+)\.(mlp|mlp_out)\[(\d+)\]$")


@dataclass(frozen=True, order=True)
class Site:
    """One unit: layer, kind and coordinate index."""

    layer: int
    kind: UnitKind
    index: int

    def __str__(self) -> str:
        return f"L{self.layer}.{self.kind}[{self.index}]"

    @classmethod
    def parse(cls, text: str) -> Site:
        match = _SITE.match(text.strip())
        if not match:
            raise ConfigError(
                f"cannot parse site {text!r}; expected the form 'L1.mlp[203]' or 'L0.mlp_out[5]'"
            )
        layer, kind, index = match.groups()
        return cls(int(layer), cast(UnitKind, kind), int(index))


def check_unit_kind(kind: str) -> UnitKind:
    if kind not in UNIT_KINDS:
        raise ConfigError(f"unit kind {kind!r} is not one of {', '.join(UNIT_KINDS)}")
    return cast(UnitKind, kind)
