"""Error hierarchy. Every error a user can cause is a MecharuleError; each also inherits the builtin a
Python caller would expect (ConfigError is a ValueError), so ``except ValueError`` keeps working.

Messages say what was wrong, what was received, what is allowed and how to fix it. The CLI prints
them on one line without a traceback.
"""

from __future__ import annotations


class MecharuleError(Exception):
    """Base class of every error raised on purpose by mecharule."""


class ConfigError(MecharuleError, ValueError):
    """A configuration value or argument is invalid."""


class UnknownNameError(MecharuleError, KeyError):
    """A registry lookup used a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelLoadError(MecharuleError, OSError):
    """A model could not be found or loaded."""


class UnsupportedArchitectureError(MecharuleError, ValueError):
    """The model's architecture is not in the architecture table."""


class DataError(MecharuleError, ValueError):
    """Input data is empty, malformed or inconsistent."""


class RunDirError(MecharuleError, OSError):
    """A run directory is missing, unwritable, or lacks a stage's inputs."""


class SandboxError(MecharuleError, RuntimeError):
    """A proposed feature function was rejected or failed inside the sandbox."""
