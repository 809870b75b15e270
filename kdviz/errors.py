"""The one exception family kdviz raises for user-facing failures; each message names the cause and the fix."""

from __future__ import annotations


class KdvizError(Exception):
    """Base class of every user-facing kdviz failure."""


class RunNotFoundError(KdvizError, FileNotFoundError):
    """The path given for a run does not exist."""


class NotARunError(KdvizError):
    """The path exists but holds no kdviz run."""


class CorruptRunError(KdvizError):
    """The run's metadata or arrays cannot be read."""


class SchemaTooNewError(KdvizError):
    """The run was written by a newer kdviz than the one reading it."""


class RunExistsError(KdvizError, FileExistsError):
    """A capture would overwrite an existing run."""


class MissingDataError(KdvizError, KeyError):
    """The run holds no array for what was asked (for example attentions captured with attentions=False)."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class CaptureError(KdvizError):
    """Capture could not run the models or read their internals."""


class InputError(KdvizError, ValueError):
    """Bad input: wrong shape, NaN or inf values, or an unsupported data type."""


class OptionalDependencyError(KdvizError, ImportError):
    """A feature needs a package that is not installed; the message names the extra to install."""
