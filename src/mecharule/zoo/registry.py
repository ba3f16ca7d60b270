"""Bundled model organisms, shipped inside the package (weights + tokenizer files + training report)."""

from __future__ import annotations

from pathlib import Path

from mecharule.errors import ModelLoadError

ORGANISMS_DIR = Path(__file__).parent / "organisms"


def available_organisms() -> list[str]:
    if not ORGANISMS_DIR.exists():
        return []
    return sorted(p.name for p in ORGANISMS_DIR.iterdir() if (p / "config.json").exists())


def organism_dir(name: str) -> Path:
    path = ORGANISMS_DIR / name
    if not (path / "config.json").exists():
        known = ", ".join(available_organisms()) or "(none bundled)"
        raise ModelLoadError(
            f"no bundled organism 'zoo:{name}' (available: {known}); train it with "
            f"`mecharule zoo train {name}` or pick another"
        )
    return path
