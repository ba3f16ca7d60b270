"""Bundled model organisms, shipped inside the package (weights + tokenizer files + training report).

``zoo:NAME`` always means the bundled organism. ``mecharule zoo train NAME`` writes a new one to a
directory of the user's (``./organisms/NAME`` by default), never into the installed package.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from mecharule.errors import ModelLoadError

ORGANISMS_DIR = Path(__file__).parent / "organisms"
USER_ORGANISMS_DIR = Path("organisms")  # relative to the working directory


def available_organisms() -> list[str]:
    if not ORGANISMS_DIR.exists():
        return []
    return sorted(p.name for p in ORGANISMS_DIR.iterdir() if (p / "config.json").exists())


def organism_dir(name: str) -> Path:
    path = ORGANISMS_DIR / name
    if not (path / "config.json").exists():
        known = ", ".join(available_organisms()) or "(none bundled)"
        close = difflib.get_close_matches(name, available_organisms(), n=1)
        guess = f"did you mean zoo:{close[0]}? " if close else ""
        raise ModelLoadError(
            f"no bundled organism 'zoo:{name}' ({guess}available: {known}); pick another, or train "
            f"one with `mecharule zoo train {name}` and pass the directory it prints as --model"
        )
    return path


def training_target(name: str, out: Path | None = None) -> Path:
    """Where ``mecharule zoo train NAME`` writes: ``out``, else ``./organisms/NAME`` (never the
    bundled organism, which ``zoo:NAME`` keeps naming)."""
    return out if out is not None else USER_ORGANISMS_DIR / name
