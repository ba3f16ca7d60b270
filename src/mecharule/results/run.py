"""A finished (or partly finished) run, read from its directory: each stage's result loads on first
access, and is None while that stage has not run or its record does not stand (``run.json``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mecharule.errors import RunDirError
from mecharule.io.rundir import RunDir, read_json
from mecharule.results.anchoring import Anchoring
from mecharule.results.attribution import Attribution
from mecharule.results.behaviour import Behaviour
from mecharule.results.display import html_table
from mecharule.results.localization import Agonist, Localization
from mecharule.results.recomposition import Recomposition
from mecharule.results.rules import RuleSetResult, scores_text
from mecharule.results.validation import Validation

if TYPE_CHECKING:
    from mecharule.config import RunConfig

T = TypeVar("T")
_CACHED = (
    "manifest",
    "config",
    "behaviour",
    "rules",
    "attribution",
    "localization",
    "agonists",
    "validation",
    "recomposition",
    "anchoring",
    "summary",
)


class Run:
    """The results of the run in ``path``.

    ``behaviour``, ``rules``, ``attribution``, ``localization``, ``validation``, ``recomposition``,
    ``anchoring`` and ``summary`` are read on first access and kept; ``refresh()`` forgets them
    (after a stage ran again). ``agonists`` are the distinct agonist units over every problem, each
    with the entry of the problem where its effect is largest.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise RunDirError(f"{self.path} is not a run directory (it does not exist or is a file)")
        self._rundir = RunDir(self.path)

    def refresh(self) -> Run:
        """Forget every result read so far; the next access reads the directory again."""
        for name in _CACHED:
            self.__dict__.pop(name, None)
        self._rundir = RunDir(self.path)
        return self

    def _if_trusted(self, names: tuple[str, ...], load: Callable[[Path], T]) -> T | None:
        if not all(self._rundir.trusted(name) for name in names):
            return None
        return load(self.path)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """``run.json``: config, seed, versions, model, per-stage records."""
        return self._rundir.manifest()

    @cached_property
    def config(self) -> RunConfig | None:
        """The config the run last used (``run.json``), None for a directory without one."""
        from mecharule.config import RunConfig, migrate_legacy
        from mecharule.errors import ConfigError

        saved = self.manifest.get("config")
        if saved is None:
            return None
        try:
            return RunConfig.model_validate(migrate_legacy(saved)[0])
        except ValueError as exc:
            raise ConfigError(
                f"{self.path / 'run.json'} holds a config this mecharule rejects: {exc}"
            ) from exc

    @cached_property
    def behaviour(self) -> Behaviour | None:
        return self._if_trusted(("behaviour.parquet", "features.parquet"), Behaviour.load)

    @cached_property
    def rules(self) -> RuleSetResult | None:
        return self._if_trusted((RuleSetResult.FILE,), RuleSetResult.load)

    @cached_property
    def attribution(self) -> Attribution | None:
        names = tuple(f"{Attribution.FOLDER}/rule_{rid}.json" for rid in Attribution.rule_ids(self.path))
        return self._if_trusted(names, Attribution.load) if names else None

    @cached_property
    def localization(self) -> Localization | None:
        return self._if_trusted((Localization.FILE,), Localization.load)

    @cached_property
    def agonists(self) -> tuple[Agonist, ...] | None:
        return None if self.localization is None else self.localization.distinct_agonists()

    @cached_property
    def validation(self) -> Validation | None:
        return self._if_trusted((Validation.FILE,), Validation.load)

    @cached_property
    def recomposition(self) -> Recomposition | None:
        return self._if_trusted((Recomposition.FILE,), Recomposition.load)

    @cached_property
    def anchoring(self) -> Anchoring | None:
        return self._if_trusted(Anchoring.FILES, Anchoring.load)

    @cached_property
    def summary(self) -> dict[str, Any] | None:
        return self._if_trusted(("summary.json",), lambda path: read_json(path / "summary.json"))

    @property
    def report_path(self) -> Path | None:
        path = self.path / "report" / "index.html"
        return path if path.is_file() else None

    def _lines(self) -> list[tuple[str, str]]:
        model = (self.manifest.get("model") or {}).get("name")
        rows = [("model", str(model or "?"))]
        if self.behaviour is not None:
            rows.append(("behaviour", str(self.behaviour)))
        if self.rules is not None:
            rows.append(("rules", f"{len(self.rules)} ({scores_text(self.rules.test)})"))
        if self.localization is not None:
            loc = self.localization
            rows.append(("agonists", f"{loc.n_agonists} in {len(loc.problems)} problems"))
            rows.append(("interventions", f"{loc.group_evaluations:,} group evaluations"))
        if self.validation is not None:
            rows.append(("validation", str(self.validation).splitlines()[0]))
        if self.recomposition is not None:
            from mecharule.recomposition.text import kind_counts, kinds_text

            counts = kind_counts(self.recomposition.problems)
            rows.append(("recomposition", kinds_text(counts) or "no rule with agonists"))
        if self.anchoring is not None:
            rows.append(("anchoring", self.anchoring._hq_line()))
        rows.append(("report", str(self.report_path or "not rendered")))
        return rows

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __str__(self) -> str:
        return "\n".join([f"run {self.path}", *(f"  {key}: {value}" for key, value in self._lines())])

    def _repr_html_(self) -> str:
        return html_table(("", ""), self._lines(), caption=f"run {self.path}")


def load_run(path: str | os.PathLike[str]) -> Run:
    """The run in ``path`` (results are read lazily); a RunDirError when it holds no run."""
    run = Run(path)
    if not (run.path / "run.json").exists() and not (run.path / "behaviour.parquet").exists():
        raise RunDirError(
            f"{run.path} holds no run (no run.json, no behaviour.parquet); make one with "
            f"mecharule.run(config, {str(run.path)!r}) or `mecharule run --out {run.path}`"
        )
    return run


__all__ = ["Run", "load_run"]
