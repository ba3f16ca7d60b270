"""Progress reporting. The library reports through a factory it is given; only the CLI turns bars on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

Tick = Callable[[int], None]


class ProgressFactory(Protocol):
    def __call__(self, desc: str, total: int | None) -> AbstractContextManager[Tick]: ...


@contextmanager
def silent(desc: str, total: int | None) -> Iterator[Tick]:
    del desc, total
    yield lambda n: None


@contextmanager
def bars(desc: str, total: int | None) -> Iterator[Tick]:
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True, leave=True) as bar:
        yield bar.update
