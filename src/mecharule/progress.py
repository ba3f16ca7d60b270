"""Progress reporting. The library reports through a factory it is given; only the CLI turns bars on.

A factory is called with a description and a total (the number of steps the stage expects) and
yields a tick: ``tick(n)`` advances by ``n``. A stage whose amount of work is only known as it goes
(CHA's adaptive search) starts from an estimate and moves it with ``grow_total(tick, n)``; a tick
that cannot grow ignores it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

Tick = Callable[[int], None]


class ProgressFactory(Protocol):
    def __call__(self, desc: str, total: int | None) -> AbstractContextManager[Tick]: ...


@contextmanager
def silent(desc: str, total: int | None) -> Iterator[Tick]:
    del desc, total
    yield lambda n: None


class _Bar:
    """A tqdm bar as a tick whose total can grow."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def __call__(self, n: int) -> None:
        self.bar.update(n)

    def grow_total(self, total: int) -> None:
        if self.bar.total is None or total > self.bar.total:
            self.bar.total = total
            self.bar.refresh()

    def settle_total(self, total: int) -> None:
        self.bar.total = total
        self.bar.refresh()


@contextmanager
def bars(desc: str, total: int | None) -> Iterator[Tick]:
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True, leave=True) as bar:
        yield _Bar(bar)


def grow_total(tick: Tick, total: int) -> None:
    """Raise the total of ``tick``'s bar to ``total`` (when the bar has one and it is lower)."""
    grow = getattr(tick, "grow_total", None)
    if grow is not None:
        grow(total)


def settle_total(tick: Tick, total: int) -> None:
    """Set the total of ``tick``'s bar to what was done, when its total was an upper bound."""
    settle = getattr(tick, "settle_total", None)
    if settle is not None:
        settle(total)


__all__ = ["ProgressFactory", "Tick", "bars", "grow_total", "settle_total", "silent"]
