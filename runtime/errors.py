"""Error types of the runtime; every message is one line that says what is wrong and how to fix it."""
from __future__ import annotations


class RuntimeInputError(ValueError):
    """An image or argument given to the runtime cannot be used (wrong dtype, empty, bad channels...)."""


class VocabularyError(RuntimeInputError):
    """A class name is not in the text cache, or no vocabulary is available at all.

    `problem` is the message without the how-to-fix hint, so a caller with better advice for
    its own context (e.g. `mgca-eval --engine`) can replace the hint."""

    def __init__(self, problem: str, hint: str = ""):
        super().__init__(f"{problem}; {hint}" if hint else problem)
        self.problem = problem


class SettingsError(RuntimeInputError):
    """An inference setting (short side, window, stride, units, unit scope) breaks the contract's rules."""


class BundleError(ValueError):
    """The exported bundle directory, manifest or model file is missing or invalid."""


class TextCacheError(BundleError):
    """A text-embedding cache is unreadable or was made for another backbone."""


class BackendError(RuntimeError):
    """The requested inference backend/device is not available here."""


def one_line(text: object) -> str:
    """Collapse a message to one line (for errors that quote foreign exception text)."""
    return " ".join(str(text).split())


__all__ = ["RuntimeInputError", "VocabularyError", "SettingsError", "BundleError", "TextCacheError", "BackendError",
           "one_line"]
