"""mecharule: explain when a language model succeeds or fails, and which neurons carry it.

The public API is deliberately small; importing the package has no side effects (no model loads,
no network, no logging configuration).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
