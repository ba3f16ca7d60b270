"""One generic name → object registry, used for tasks, extractors and attributors.

A registry can fill itself on its first lookup, so the module that defines it never imports what it
holds: ``builtin`` names a module whose import registers the built-in entries; ``entry_points`` an
``importlib.metadata`` group through which other installed packages add entries; and with
``importable=True`` a ``module:attribute`` name is imported on lookup (an object outside any package).
An unknown name lists the valid ones and suggests the closest.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from mecharule.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually factories). Unknown names list the valid ones."""

    def __init__(
        self,
        kind: str,
        *,
        builtin: str | None = None,
        entry_points: str | None = None,
        importable: bool = False,
    ) -> None:
        self.kind = kind
        self.builtin = builtin  # module whose import registers the built-in entries
        self.entry_point_group = entry_points
        self.importable = importable
        self._items: dict[str, T] = {}
        self._builtin_loaded = builtin is None

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        self._load_builtin()
        if name in self._items:
            return self._items[name]
        if self.importable and ":" in name:
            return self._cache(name, self._import(name))
        entry = self._entry_points().get(name)
        if entry is not None:
            return self._cache(name, self._load_entry_point(entry))
        raise UnknownNameError(self.unknown_message(name))

    def names(self) -> list[str]:
        """Registered names, built-in and from entry points (these not imported)."""
        self._load_builtin()
        return sorted(set(self._items) | set(self._entry_points()))

    def sources(self) -> dict[str, str]:
        """``{name: where it comes from}``: ``module.attr`` of a registered object, or
        ``entry point module:attr (distribution)`` of one not loaded yet."""
        self._load_builtin()
        found = {name: _where(obj) for name, obj in self._items.items()}
        for name, entry in self._entry_points().items():
            if name not in found:
                dist = f" ({entry.dist.name})" if entry.dist is not None else ""
                found[name] = f"entry point {entry.value}{dist}"
        return dict(sorted(found.items()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    # -- lazy sources ----------------------------------------------------------------------------
    def _load_builtin(self) -> None:
        if self._builtin_loaded or self.builtin is None:
            return
        self._builtin_loaded = True  # set first: the module registers into this registry as it loads
        importlib.import_module(self.builtin)

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        """Declared entries, read afresh (packages installed since the last lookup count)."""
        if self.entry_point_group is None:
            return {}
        found: dict[str, importlib.metadata.EntryPoint] = {}
        for entry in importlib.metadata.entry_points(group=self.entry_point_group):
            found.setdefault(entry.name, entry)
        return found

    def _load_entry_point(self, entry: importlib.metadata.EntryPoint) -> T:
        try:
            obj: T = entry.load()
        except (ImportError, AttributeError) as exc:
            dist = f" of {entry.dist.name}" if entry.dist is not None else ""
            raise UnknownNameError(
                f"{self.kind} {entry.name!r} (entry point {entry.value}{dist} in group "
                f"{self.entry_point_group}) cannot be loaded: {type(exc).__name__}: {exc}; reinstall "
                "that package or fix its entry point"
            ) from exc
        return obj

    def _import(self, spec: str) -> T:
        """``package.module:attribute`` (the attribute may be dotted: ``module:Class.create``)."""
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise UnknownNameError(f"{self.kind} {spec!r}: write an importable {self.kind} as module:name")
        importlib.invalidate_caches()  # a module written since the interpreter started
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
                raise UnknownNameError(
                    f"{self.kind} {spec!r}: no module named {exc.name!r}; install it or put the folder "
                    "that holds it on PYTHONPATH"
                ) from exc
            raise UnknownNameError(
                f"{self.kind} {spec!r}: importing {module_name} failed: {type(exc).__name__}: {exc}"
            ) from exc
        obj: Any = module
        for part in attribute.split("."):
            if not hasattr(obj, part):
                public = [n for n in dir(obj) if not n.startswith("_")]
                close = difflib.get_close_matches(part, public, n=1)
                guess = f" (did you mean {close[0]!r}?)" if close else ""
                raise UnknownNameError(
                    f"{self.kind} {spec!r}: {getattr(obj, '__name__', module_name)} has no {part!r}{guess}"
                )
            obj = getattr(obj, part)
        return obj  # type: ignore[no-any-return]

    def _cache(self, name: str, obj: T) -> T:
        self._items.setdefault(name, obj)
        return obj

    def unknown_message(self, name: str) -> str:
        """Why ``name`` is not a valid name: the registered ones and the closest."""
        names = self.names()
        close = difflib.get_close_matches(name, names, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        valid = ", ".join(names) or "(none)"
        extra = "; or module:name to import one of your own" if self.importable else ""
        return f"unknown {self.kind} {name!r}{guess}; valid {self.kind}s: {valid}{extra}"


def _where(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    return f"{module}.{qualname}" if module and qualname else type(obj).__name__
