"""The one user-facing error type, `MgcaError`, and the runtime's own kinds of it.

Every error the project raises for something the user can fix (a bad argument, file, config value or
install) derives from `MgcaError`, and its message is one line that names the problem and the fix. The
command-line tools (`mgca-train`, `mgca-eval`, `mgca-segment`, `mgca-export`) turn it into that line on
stderr and an exit status (`run_cli`); any other exception is a bug and keeps its traceback. Torch-free,
so the lean runtime and every CLI share it.
"""
from __future__ import annotations

import sys
from collections.abc import Callable


class MgcaError(Exception):
    """Something the user can fix; the message says what and how. `exit_code` is the CLIs' exit status."""

    exit_code = 2


class RuntimeInputError(MgcaError, ValueError):
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


class BundleError(MgcaError, ValueError):
    """The exported bundle directory, manifest or model file is missing, invalid or altered."""


class TextCacheError(BundleError):
    """A text-embedding cache is unreadable or was made for another backbone."""


class BackendError(MgcaError, RuntimeError):
    """The requested inference backend/device is not available here."""


class OutputPathError(MgcaError, ValueError):
    """An output file or folder cannot be written, or would overwrite an input."""


class ImageFileError(MgcaError, ValueError):
    """An image file cannot be read or decoded; the message names the file."""


def one_line(text: object) -> str:
    """Collapse a message to one line (for errors that quote foreign exception text)."""
    return " ".join(str(text).split())


def run_cli(prog: str, call: Callable[[], object], interrupted: str = "interrupted") -> int:
    """Run a command's body: 0 when it returns, an `MgcaError` as one line on stderr and its exit code,
    Ctrl-C as `interrupted` and 130. Every other exception propagates with its traceback (a bug)."""
    try:
        call()
    except MgcaError as err:
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    return 0


__all__ = ["MgcaError", "RuntimeInputError", "VocabularyError", "SettingsError", "BundleError", "TextCacheError",
           "BackendError", "OutputPathError", "ImageFileError", "one_line", "run_cli"]
