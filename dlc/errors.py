"""One error hierarchy for dlc; the CLI maps each class to its exit code in one place."""

from __future__ import annotations


class DlcError(Exception):
    """A failure the user can act on: a one-line message plus an optional hint."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class InputError(DlcError):
    """Bad input from the user: a missing file, a malformed flag value, an unknown name."""

    exit_code = 2


class TargetError(InputError):
    """A target string, JSON or preset name that cannot be parsed or found."""


class ModelImportError(DlcError):
    """The model cannot be read, checked or imported into Relax."""

    exit_code = 3


class TuningError(DlcError):
    exit_code = 4


class BuildError(DlcError):
    exit_code = 5


class AccuracyError(DlcError):
    """The compiled library disagrees with ONNX Runtime beyond the tolerance."""

    exit_code = 6


class LogStoreError(DlcError):
    exit_code = 7


class LogImportError(DlcError):
    """A tuning-log archive refused on import: an unsafe member (a path out of the store, a
    link, a device), over a size cap, or another tool's schema or target key."""

    exit_code = 8


class BoardError(DlcError):
    """A board (or its tracker, emulator or cross linker) cannot be reached, set up or used."""

    exit_code = 9
